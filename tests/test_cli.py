"""Every command the book ships reports a user error the same way: one line on stderr,
`python -m accelbook.<command>: error: ...`, exit status 2, no traceback; argument errors point to --help,
other errors (missing data, an unknown device, a missing file) do not."""

import os
import subprocess
import sys

import pytest

from accelbook import cli
from bookfacts import ROOT

COMMANDS = ("ladder", "ddp", "refresh", "probe", "predict", "inference")
WITH_DEVICE = ("ladder", "ddp", "refresh", "probe", "inference")
READ_MNIST = ("ladder", "ddp", "refresh", "inference")


def cases(tmp_path):
    """(command, arguments, environment, words the message holds, whether it points to --help)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    env = {**os.environ, "ACCELBOOK_DATA": str(empty)}
    out = ["--out", str(tmp_path / "out")]
    yield from ((c, ["--no-such-option", *(["digit.png"] if c == "predict" else [])], None,
                 "unrecognized arguments: --no-such-option", True) for c in COMMANDS)
    yield from ((c, ["--device", "tpu", *(out if c == "refresh" else [])], None, "unknown device 'tpu'", False)
                for c in WITH_DEVICE)
    yield from ((c, ["--device", "cpu", *(out if c == "refresh" else [])], env, "ACCELBOOK_DATA", False)
                for c in READ_MNIST)
    yield "predict", ["missing.png", "--model", str(tmp_path / "none.onnx")], None, "none.onnx", False
    yield "ladder", ["--seeds", "0"], None, "--seeds: must be a finite number >= 1", True


def test_every_command_reports_a_user_error_in_one_line_and_exits_2(tmp_path):
    started = [(case, subprocess.Popen([sys.executable, "-m", f"accelbook.{case[0]}", *case[1]], cwd=ROOT,
                                       env=case[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
               for case in cases(tmp_path)]
    wrong = []
    for (command, args, _, words, points_to_help), proc in started:
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        if not (proc.returncode == 2 and len(lines) == 1 and words in lines[0]
                and lines[0].startswith(f"python -m accelbook.{command}: error: ")
                and lines[0].endswith("(see --help)") == points_to_help):
            wrong.append(f"{command} {' '.join(args)} -> exit {proc.returncode}: {err[-300:]}")
    assert not wrong, "\n".join(wrong)
    assert not (tmp_path / "out").exists()


def test_user_errors_are_the_library_exceptions_too():
    from accelbook.checkpoint import ChecksumError
    from accelbook.data import CorruptDatasetError, DatasetNotFoundError
    from accelbook.device import DeviceNotAvailableError, pick_device
    from accelbook.inference import ProviderFallback
    from accelbook.predict import PredictError

    for kind in (ChecksumError, CorruptDatasetError, DatasetNotFoundError, DeviceNotAvailableError,
                 ProviderFallback, PredictError):
        assert issubclass(kind, cli.UserError), kind
    with pytest.raises(ValueError, match="unknown device"):  # still a ValueError to a library caller
        pick_device("tpu")


def test_a_message_on_several_lines_is_printed_on_one(capsys):
    assert cli.fail("python -m accelbook.x", ValueError("first\n  second")) == 2
    assert capsys.readouterr().err == "python -m accelbook.x: error: first second\n"
