"""Explicit device choice and the environment report."""

import pytest
import torch

from accelbook.device import available_kinds, environment, pick_device


def test_auto_picks_fastest_available_and_says_so(capsys, monkeypatch):
    monkeypatch.delenv("ACCELBOOK_DEVICE", raising=False)
    device = pick_device()
    assert device.type == available_kinds()[0]
    assert f"Using device: {device}" in capsys.readouterr().out


def test_cpu_always_works():
    assert pick_device("cpu", verbose=False) == torch.device("cpu")


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("ACCELBOOK_DEVICE", "cpu")
    assert pick_device(verbose=False).type == "cpu"


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not available here"):
        pick_device("cuda")


def test_environment_report_names_versions():
    info = environment(torch.device("cpu"))
    assert info["torch"] == torch.__version__
    assert info["device"] == "cpu" and "CPU" in info["device_name"]
