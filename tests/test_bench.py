"""Timing helpers and probes: warm-up, correctness checks, agreement with torch.utils.benchmark."""

import subprocess
import sys
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from accelbook import bench
from accelbook.bench import (
    Measurement,
    benchmark_median,
    copy_probe,
    matmul_flops,
    matmul_intensity,
    matmul_probe,
    tf32_mode,
    time_op,
    time_unsynchronized,
    transfer_probe,
)


def test_time_op_warms_up_then_repeats():
    calls = []
    m = time_op(lambda: calls.append(1), "cpu", warmup=3, repeats=7, min_block=0)
    assert len(calls) == 3 + 1 + 7 and len(m.times) == 7 and m.median >= 0  # warm-up, calibration, timed


def test_tiny_operations_are_timed_in_blocks():
    calls = []
    m = time_op(lambda: calls.append(1), "cpu", warmup=0, repeats=2, min_block=0.005)
    assert len(calls) > 10 and m.median < 0.005


def test_measurement_median_and_spread():
    m = Measurement([1.0, 2.0, 4.0])
    assert m.median == 2.0 and m.spread == pytest.approx(1.5)


def test_unsynchronized_clock_counts_calls():
    calls = []
    assert len(time_unsynchronized(lambda: calls.append(1), repeats=4).times) == 4 == len(calls)


def test_flop_and_intensity_formulas():
    assert matmul_flops(2, 3, 4) == 48
    assert matmul_intensity(1024, 4) == pytest.approx(2 * 1024 / 12)


NEW_TF32_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


@pytest.mark.skipif(not NEW_TF32_API, reason="this torch has only the allow_tf32 flags")
def test_tf32_switch_sets_cublas_and_cudnn_alike_and_is_restored():
    mm, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (mm.fp32_precision, conv.fp32_precision)
    for enabled, want in ((True, "tf32"), (False, "ieee")):
        with tf32_mode(enabled):
            assert (mm.fp32_precision, conv.fp32_precision) == (want, want)
        assert (mm.fp32_precision, conv.fp32_precision) == before


# The settings PyTorch's documentation now recommends; once one is used, reading the legacy allow_tf32 flags
# raises RuntimeError ("mix of the legacy and new APIs"). Each runs in a fresh interpreter: they are global.
FP32_PRECISION_SETTINGS = ["torch.backends.fp32_precision = 'tf32'",
                           "torch.backends.cudnn.conv.fp32_precision = 'ieee'",
                           "torch.backends.cuda.matmul.fp32_precision = 'tf32'"]


@pytest.mark.skipif(not NEW_TF32_API, reason="this torch has only the allow_tf32 flags")
@pytest.mark.parametrize("setting", FP32_PRECISION_SETTINGS)
def test_tf32_mode_works_after_the_fp32_precision_settings(setting):
    script = f"""
import torch
from accelbook.bench import tf32_mode
{setting}
mm, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
before = (mm.fp32_precision, conv.fp32_precision)
for enabled, want in ((True, "tf32"), (False, "ieee")):
    with tf32_mode(enabled):
        assert (mm.fp32_precision, conv.fp32_precision) == (want, want), (mm.fp32_precision, conv.fp32_precision)
    assert (mm.fp32_precision, conv.fp32_precision) == before
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-1500:]


def test_tf32_switch_uses_the_legacy_flags_on_an_older_torch():
    """Before fp32_precision, cuDNN's switch is cudnn.allow_tf32; matmuls go through the global matmul precision."""
    old = SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False)),
                          cudnn=SimpleNamespace(allow_tf32=True, benchmark=False, deterministic=False))
    precision = torch.get_float32_matmul_precision()
    with tf32_mode(True, backends=old):
        assert old.cudnn.allow_tf32 is True and torch.get_float32_matmul_precision() == "high"
    assert old.cudnn.allow_tf32 is True and torch.get_float32_matmul_precision() == precision
    with tf32_mode(False, backends=old):
        assert old.cudnn.allow_tf32 is False and torch.get_float32_matmul_precision() == "highest"
    assert old.cudnn.allow_tf32 is True and torch.get_float32_matmul_precision() == precision


class _FakeCuda:
    """Just enough of torch.cuda to see on which device CUDA events are recorded."""

    def __init__(self):
        self.current, self.recorded = 0, []
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                pass

            def record(self, stream=None):
                fake.recorded.append(fake.current if stream is None else stream.device.index)

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return 2.0

        self.Event = Event

    @contextmanager
    def device(self, device):
        before, self.current = self.current, torch.device(device).index
        try:
            yield
        finally:
            self.current = before


def test_events_are_recorded_on_the_timed_device_not_the_current_one(monkeypatch):
    fake = _FakeCuda()
    monkeypatch.setattr(torch.cuda, "Event", fake.Event)
    monkeypatch.setattr(torch.cuda, "device", fake.device)
    seconds = bench._block_seconds(lambda: None, torch.device("cuda:1"), 4)
    assert seconds == pytest.approx(2e-3)
    assert fake.recorded == [1, 1], "events on the current device (0) time only the launches of work on cuda:1"
    assert fake.current == 0


class _NoFloat64(torch.Tensor):
    """A tensor that refuses float64 as an MPS tensor does; .cpu() gives back an ordinary CPU tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        wants64 = torch.float64 in (*args[1:], *kwargs.values())
        if func is torch.Tensor.double or (func is torch.Tensor.to and wants64):
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64")
        return super().__torch_function__(func, types, args, kwargs)


def test_relative_error_computes_its_float64_reference_on_the_cpu():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    out = (a @ b).as_subclass(_NoFloat64)
    err = bench.relative_error(out, a.as_subclass(_NoFloat64), b.as_subclass(_NoFloat64))
    assert err < 1e-6
    assert bench.relative_error(out + 1, a, b) > 1e-3


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16", "fp8"])
def test_matmul_probe_checks_then_reports(fmt):
    row = matmul_probe(64, fmt, "cpu", warmup=1, repeats=2)
    assert row["rel_error"] <= bench.MATMUL_TOLERANCE[fmt] and row["tflops"] > 0 and row["n"] == 64


def test_wrong_product_is_refused_before_timing(monkeypatch):
    monkeypatch.setattr(bench, "_matmul_call", lambda a, b, fmt: (lambda: a + b))
    with pytest.raises(AssertionError, match="relative error"):
        matmul_probe(32, "fp32", "cpu")


def test_copy_probe_counts_read_and_write():
    row = copy_probe(4 * 2**20, "cpu", repeats=3)
    assert row["bytes"] == 4 * 2**20
    assert row["gbps"] == pytest.approx(2 * row["bytes"] / row["seconds"] / 1e9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_transfer_probe_needs_cuda():
    assert transfer_probe(2**20, "h2d", True, "cpu") is None


def test_matmul_probe_agrees_with_torch_utils_benchmark():
    """The probe's median and torch.utils.benchmark's agree within 10 % on the same matmul.

    The check runs single-threaded (two threads on a shared 2-core machine stall on each other) and,
    since shared CPUs are noisy, measures the pair up to five times; one agreeing pair passes.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(256, 256)
        ratios = []
        for _ in range(5):
            ours = time_op(lambda: a @ a, "cpu", warmup=3, repeats=15).median
            theirs = benchmark_median("a @ a", {"a": a}, min_run_time=0.3)
            ratios.append(round(ours / theirs, 3))
            if abs(ratios[-1] - 1) <= 0.10:
                return
        pytest.fail(f"probe / torch.utils.benchmark ratios {ratios} are not within 10 %")
    finally:
        torch.set_num_threads(threads)


def test_backend_flags_are_restored():
    from accelbook.bench import backend_flags

    before = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with backend_flags(benchmark=True, deterministic=True):
        assert torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
    assert (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before


def test_peak_flops_is_measured_on_a_cpu_and_the_dense_datasheet_figure_on_a_gpu(monkeypatch):
    from accelbook.bench import peak_flops

    flops, source = peak_flops("cpu", "fp32", n=256)
    assert flops > 1e8 and source.startswith("measured here: fp32 matmul, n=256")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    flops, source = peak_flops(torch.device("cuda", 0), "bf16")
    assert flops == 1979e12 / 2 and "H100 SXM datasheet, dense bf16" in source  # printed with sparsity
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert peak_flops(torch.device("cuda", 0), "bf16")[0] == 312e12  # printed dense
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    flops, source = peak_flops(torch.device("cuda", 0), "bf16")
    assert flops is None and "no datasheet bf16 peak for NVIDIA H100 PCIe" in source
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert peak_flops(torch.device("cuda", 0), "bf16") == (None, "T4: its datasheet gives no bf16 peak (no bf16 tensor cores)")
    assert peak_flops(torch.device("cuda", 0), "fp16")[0] == 65e12
