"""The refresh command: it says what it needs, refuses bad arguments in one line, stops at the first failing
cell naming it, and runs end to end on CPU in the quick profile (records, a chapter, one archive)."""

import json
import re
import subprocess
import sys
import tarfile

import nbformat
import pytest

from accelbook import records, refresh
from bookfacts import ROOT


def run(*args: str, cwd=ROOT, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m accelbook.refresh args` in `cwd`."""
    return subprocess.run([sys.executable, "-m", "accelbook.refresh", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_requirements_say_what_to_bring():
    done = run("--requirements")
    assert done.returncode == 0
    assert "nbclient" in done.stdout and "pip download --dest wheels" in done.stdout and "--no-deps" in done.stdout


def test_every_record_kind_has_a_command_that_writes_it():
    commands = refresh.record_commands(list(refresh.RECORDS), "cuda", 8, False, "gpu")
    assert {kind for kind, _, _ in commands} == set(refresh.RECORDS)
    for kind, argv, path in commands:
        module = records.COMMANDS[kind].split(" -m ")[1].split()  # e.g. accelbook.ladder --task shakespeare
        assert all(word in argv for word in module) and str(path) in argv and path.parts[0] == "results"


def test_user_errors_are_one_line(tmp_path):
    cases = [(["--chapters", "42"], "no chapter named 42"), (["--records", "fast"], "unknown record kind fast"),
             (["--device", "tpu"], "unknown device")]
    for args, message in cases:
        done = run(*args, "--out", str(tmp_path / "x"))
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    elsewhere = run("--quick", cwd=tmp_path)
    assert elsewhere.returncode == 2 and "repository root" in elsewhere.stderr
    assert not (tmp_path / "x").exists()


def test_a_failing_cell_stops_the_chapter_and_is_named(tmp_path):
    cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
             nbformat.v4.new_code_cell("y = 2")]
    source = tmp_path / "99_broken.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), source)
    with pytest.raises(refresh.RefreshError, match=r"99_broken: code cell 1 failed: ValueError: broken on purpose"):
        refresh.execute(source, tmp_path / "out.ipynb")
    written = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert written.cells[0].execution_count == 1 and written.cells[2].execution_count is None


def test_quick_refresh_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "refresh"
    done = run("--quick", "--device", "cpu", "--chapters", "02", "--records", "probe,ddp", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "record  probe" in done.stdout and "record  ddp" in done.stdout and "chapter 02_gpu_setup" in done.stdout
    with tarfile.open(tmp_path / "refresh.tar.gz") as tar:
        names = tar.getnames()
    assert "notebooks/02_gpu_setup.ipynb" in names and "results/README.md" in names
    new = sorted(p for p in (out / "results").glob("*.json") if not (ROOT / "results" / p.name).exists())
    assert {json.loads(p.read_text())["kind"] for p in new} == {"probe", "ddp"}
    for path in new:  # provenance names the command, never a folder of this machine
        command = json.loads(path.read_text())["provenance"]["command"]
        assert str(tmp_path) not in command and "--out results/" in command, command
    chapter = nbformat.read(out / "notebooks" / "02_gpu_setup.ipynb", as_version=4)
    assert all(c.execution_count for c in chapter.cells if c.cell_type == "code" and c.source.strip())


def test_a_torch_below_the_floor_is_refused_in_one_sentence():
    assert refresh.old_torch("2.14.0+cu130") is None and refresh.old_torch("2.6.0") is None
    assert refresh.old_torch("2.5.1+cu121").startswith("torch 2.5.1+cu121 is older than 2.6")
    assert refresh.old_torch("1.13.1") is not None
    floor = re.search(r'"torch>=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert refresh.TORCH_FLOOR == (int(floor[1]), int(floor[2]))  # the same floor as the package's
