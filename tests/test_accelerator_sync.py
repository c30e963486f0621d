"""A device that accelbook.device.pick_device may choose through torch.accelerator is timed honestly."""

from types import SimpleNamespace

import torch

from accelbook.bench import synchronize


def test_timing_waits_for_a_torch_accelerator_backend(monkeypatch):
    """pick_device can now return a backend beyond CUDA and MPS (xpu, ...): the timers must wait for it."""
    calls = []
    monkeypatch.setattr(torch, "accelerator", SimpleNamespace(synchronize=lambda device=None: calls.append(device)))
    synchronize(torch.device("xpu"))
    assert calls == [torch.device("xpu")]
    synchronize("cpu")  # nothing queued on the CPU: no call
    assert calls == [torch.device("xpu")]
