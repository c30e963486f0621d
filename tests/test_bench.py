"""Timing helpers and probes: warm-up, correctness checks, agreement with torch.utils.benchmark."""

import pytest
import torch

from accelbook import bench
from accelbook.bench import (Measurement, benchmark_median, copy_probe, matmul_flops, matmul_intensity,
                             matmul_probe, tf32_mode, time_op, time_unsynchronized, transfer_probe)


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


def test_tf32_switch_sets_cublas_and_cudnn_alike_and_is_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for enabled in (True, False):
        with tf32_mode(enabled):
            assert torch.backends.cuda.matmul.allow_tf32 is enabled and torch.backends.cudnn.allow_tf32 is enabled
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16", "fp8"])
def test_matmul_probe_checks_then_reports(fmt):
    row = matmul_probe(64, fmt, "cpu", warmup=1, repeats=2)
    assert row["rel_error"] <= bench.TOLERANCE[fmt] and row["tflops"] > 0 and row["n"] == 64


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
