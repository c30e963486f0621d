"""Explicit device choice and the environment report."""

from types import SimpleNamespace

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


def fake_accelerator(kind: str | None, usable: bool = True):
    """A stand-in for torch.accelerator (torch 2.6+): `kind` is the backend torch was built for (None: none),
    `usable` whether a device of that kind is visible."""

    def current_accelerator():
        if kind is None:  # PyTorch 2.6's documentation: raises where there is no accelerator
            raise RuntimeError("no accelerator")
        return torch.device(kind)  # later versions: the build's backend, usable or not

    return SimpleNamespace(is_available=lambda: kind is not None and usable,
                           current_accelerator=current_accelerator)


def no_gpu_here(monkeypatch):
    """Make this machine one without CUDA, MPS or an NVIDIA driver, whatever it really has."""
    from accelbook import device as device_module
    from accelbook import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    monkeypatch.setattr(gpu, "unusable_gpu", lambda: None)


def fake_cuda(monkeypatch, count: int = 2):
    """Make torch report `count` CUDA devices (nothing runs on them)."""
    no_gpu_here(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_takes_torch_accelerators_device_and_says_so(monkeypatch, capsys):
    no_gpu_here(monkeypatch)
    monkeypatch.setattr(torch, "accelerator", fake_accelerator("xpu"))  # a backend the book does not name
    monkeypatch.delenv("ACCELBOOK_DEVICE", raising=False)
    assert available_kinds() == ["xpu", "cpu"]
    assert pick_device() == torch.device("xpu")
    assert capsys.readouterr().out == "Using device: xpu (torch.accelerator's choice; available: xpu, cpu)\n"


def test_auto_on_cuda_goes_through_torch_accelerator(monkeypatch, capsys):
    fake_cuda(monkeypatch)
    monkeypatch.setattr(torch, "accelerator", fake_accelerator("cuda"))
    monkeypatch.delenv("ACCELBOOK_DEVICE", raising=False)
    assert pick_device() == torch.device("cuda")
    assert "(torch.accelerator's choice; available: cuda, cpu)" in capsys.readouterr().out


def test_without_torch_accelerator_the_explicit_path_still_works(monkeypatch, capsys):
    fake_cuda(monkeypatch)
    monkeypatch.delattr(torch, "accelerator", raising=False)  # torch < 2.6
    monkeypatch.delenv("ACCELBOOK_DEVICE", raising=False)
    assert pick_device() == torch.device("cuda")
    assert capsys.readouterr().out == "Using device: cuda (fastest available; available: cuda, cpu)\n"
    no_gpu_here(monkeypatch)
    assert pick_device(verbose=False) == torch.device("cpu")


def test_the_environment_variable_still_wins_over_torch_accelerator(monkeypatch, capsys):
    fake_cuda(monkeypatch, count=2)
    monkeypatch.setattr(torch, "accelerator", fake_accelerator("cuda"))
    monkeypatch.setenv("ACCELBOOK_DEVICE", "cpu")
    assert pick_device(verbose=False) == torch.device("cpu")
    monkeypatch.setenv("ACCELBOOK_DEVICE", "cuda:1")
    assert pick_device() == torch.device("cuda:1")
    assert "Using device: cuda:1 (asked for; available: cuda, cpu)" in capsys.readouterr().out
    monkeypatch.setenv("ACCELBOOK_DEVICE", "cuda:2")
    with pytest.raises(RuntimeError, match="only 2 CUDA device"):
        pick_device(verbose=False)


def test_the_environment_variable_may_name_torch_accelerators_backend(monkeypatch):
    no_gpu_here(monkeypatch)
    monkeypatch.setattr(torch, "accelerator", fake_accelerator("xpu"))
    monkeypatch.setenv("ACCELBOOK_DEVICE", "xpu")
    assert pick_device(verbose=False) == torch.device("xpu")


@pytest.mark.parametrize("built_for", [None, "cuda"])  # a CPU-only build; a CUDA build without a GPU (as here)
def test_without_an_accelerator_the_report_line_is_unchanged(monkeypatch, capsys, built_for):
    """The chapters' stored setup cells print this line: a change here would make them stale."""
    no_gpu_here(monkeypatch)
    monkeypatch.setattr(torch, "accelerator", fake_accelerator(built_for, usable=False))
    monkeypatch.delenv("ACCELBOOK_DEVICE", raising=False)
    assert pick_device() == torch.device("cpu")
    assert capsys.readouterr().out == "Using device: cpu (fastest available; available: cpu)\n"


def test_another_backend_is_not_described_as_the_cpu(monkeypatch):
    from accelbook.device import device_name

    xpu = SimpleNamespace(get_device_name=lambda device: "Intel Arc A770")
    monkeypatch.setattr(torch, "xpu", xpu, raising=False)
    assert device_name(torch.device("xpu")) == "Intel Arc A770"
    assert device_name(torch.device("hpu")) == "hpu device"
