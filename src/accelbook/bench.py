"""Timing that tells the truth on any device: warm-up, synchronization, repeats, median (chapters 1-2)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

# Matmul formats the probes know, by the names the book uses.
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "fp8": torch.float8_e4m3fn}


@dataclass
class Measurement:
    """Wall-clock seconds of repeated runs of one operation."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per run (robust to the odd slow run)."""
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Relative spread: (max - min) / median."""
        return (max(self.times) - min(self.times)) / self.median


def synchronize(device: torch.device | str) -> None:
    """Wait until every queued kernel on `device` has finished (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type != "cpu":  # another backend that pick_device took from torch.accelerator (xpu, ...)
        torch.accelerator.synchronize(device)


def time_op(fn: Callable[[], object], device: torch.device | str, warmup: int = 3,
            repeats: int = 10, min_block: float = 0.01) -> Measurement:
    """Seconds per call of `fn()` on `device`: untimed warm-up, then `repeats`
    synchronized timed blocks.

    A block runs `fn` often enough to last about `min_block` seconds (one call for slow
    operations), so clock resolution and scheduler hiccups do not dominate tiny kernels.
    On CUDA each block is bracketed by CUDA events on `device`'s stream (the GPU's own
    clock); elsewhere by a synchronize and `time.perf_counter`.
    """
    device = torch.device(device)
    for _ in range(warmup):  # first calls: kernel choice, allocator growth, cold caches
        fn()
    number = max(1, int(min_block / max(_block_seconds(fn, device, 1), 1e-9)))
    blocks = [_block_seconds(fn, device, number) for _ in range(repeats)]
    return Measurement([b / number for b in blocks])


def _block_seconds(fn: Callable[[], object], device: torch.device, number: int) -> float:
    """Seconds for `number` back-to-back calls of `fn`, from a synchronized start to a synchronized end."""
    if device.type == "cuda":
        with torch.cuda.device(device):  # events record on the current device's stream: make it `device`'s
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
        return start.elapsed_time(end) / 1e3
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def time_unsynchronized(fn: Callable[[], object], repeats: int = 10) -> Measurement:
    """The wrong way, for comparison: a bare clock around each call, no synchronization."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Measurement(times)


def tf32_mode(enabled: bool, backends=torch.backends):
    """`backend_flags` allowing (or forbidding) TF32 for float32 matmuls (cuBLAS) and convolutions (cuDNN) alike.

    The defaults differ (convolutions may use TF32 on Ampere and newer, matmuls may not), so every
    float32 measurement sets both explicitly and says which mode it ran in.
    """
    return backend_flags(tf32_matmul=enabled, tf32_conv=enabled, backends=backends)


def matmul_flops(m: int, n: int, k: int) -> int:
    """Floating-point operations of an (m, k) @ (k, n) product: one multiply and one add per term."""
    return 2 * m * n * k


def matmul_intensity(n: int, bytes_per_element: float) -> float:
    """FLOPs per byte of a square n x n matmul that reads A and B and writes C once."""
    return matmul_flops(n, n, n) / (3 * n * n * bytes_per_element)


def _square(n: int, device: torch.device, seed: int) -> torch.Tensor:
    """A reproducible n x n standard-normal float32 matrix made directly on `device`."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(n, n, device=device, generator=gen)


def _matmul_call(a: torch.Tensor, b: torch.Tensor, fmt: str) -> Callable[[], torch.Tensor]:
    """A no-argument call computing a @ b in format `fmt` (operands converted once, outside the timing)."""
    if fmt == "fp8":  # scaled matmul: e4m3 operands, B column-major, bf16 output
        one = torch.ones((), device=a.device)
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
        return lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    a, b = a.to(DTYPES[fmt]), b.to(DTYPES[fmt])
    return lambda: a @ b


def relative_error(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rows: int = 4) -> float:
    """Relative Frobenius error of the first `rows` rows of `out` against a float64 a @ b, computed on the CPU.

    On the CPU because some devices have no float64 (MPS refuses it). `rows` keeps A's rows few, but B
    is copied whole (at n = 16,384 that is 1 GiB from the device and 2 GiB as float64).
    """
    ref = a[:rows].cpu().double() @ b.cpu().double()
    return ((out[:rows].cpu().double() - ref).norm() / ref.norm()).item()


# Largest relative error accepted before a format is timed (fp8's 3 mantissa bits give ~5 %).
MATMUL_TOLERANCE = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 2e-2, "fp16": 5e-3, "fp8": 0.15}


def matmul_probe(n: int, fmt: str, device: torch.device | str, warmup: int = 2, repeats: int = 5) -> dict:
    """Achieved TFLOP/s of an n x n matmul in `fmt`, after checking the product against float64."""
    device = torch.device(device)
    a, b = _square(n, device, 0), _square(n, device, 1)
    with tf32_mode(fmt == "tf32"):
        call = _matmul_call(a, b, fmt)
        err = relative_error(call(), a, b)
        if not err <= MATMUL_TOLERANCE[fmt]:
            raise AssertionError(f"{fmt} matmul n={n} is wrong: relative error {err:.2e} > {MATMUL_TOLERANCE[fmt]}")
        m = time_op(call, device, warmup, repeats)
    nbytes = 1 if fmt == "fp8" else DTYPES[fmt].itemsize
    return {"format": fmt, "n": n, "seconds": m.median, "tflops": matmul_flops(n, n, n) / m.median / 1e12,
            "intensity": matmul_intensity(n, nbytes), "rel_error": err, "repeats": repeats}


def peak_flops(device: torch.device | str, fmt: str, n: int = 1024) -> tuple[float | None, str]:
    """MFU's denominator: (FLOP/s, where it comes from); the datasheet's dense peak on a GPU, a measured matmul elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        from .specs import dense, match

        name = torch.cuda.get_device_name(device)
        row = match(name)
        peak = dense(row, fmt) if row else None
        if row and peak is None:  # a T4 in bf16: the format has no tensor cores there
            return None, f"{row['gpu']}: its datasheet gives no {fmt} peak (no {fmt} tensor cores)"
        if peak is None:
            return None, f"no datasheet {fmt} peak for {name} in accelbook.specs"
        return peak * 1e12, f"{row['gpu']} datasheet, dense {fmt} ({row['source']})"
    measured = matmul_probe(n, fmt, device)
    return measured["tflops"] * 1e12, f"measured here: {fmt} matmul, n={n}, median of {measured['repeats']}"


def copy_probe(nbytes: int, device: torch.device | str, warmup: int = 2, repeats: int = 5) -> dict:
    """Memory bandwidth in GB/s of one large on-device copy (bytes read + bytes written)."""
    device = torch.device(device)
    src = torch.arange(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    m = time_op(lambda: dst.copy_(src), device, warmup, repeats)
    if not torch.equal(dst, src):
        raise AssertionError("the copy does not equal its source")
    moved = 2 * src.numel() * src.element_size()
    return {"bytes": src.numel() * src.element_size(), "seconds": m.median, "gbps": moved / m.median / 1e9,
            "repeats": repeats}


def transfer_probe(nbytes: int, direction: str, pinned: bool, device: torch.device | str,
                   warmup: int = 2, repeats: int = 5) -> dict | None:
    """Host<->device bandwidth in GB/s ('h2d' or 'd2h', pageable or pinned); None without CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    host = torch.ones(nbytes, dtype=torch.uint8, pin_memory=pinned)
    dev = torch.zeros(nbytes, dtype=torch.uint8, device=device)
    dst, src = (dev, host) if direction == "h2d" else (host, dev)
    m = time_op(lambda: dst.copy_(src, non_blocking=pinned), device, warmup, repeats)
    return {"direction": direction, "memory": "pinned" if pinned else "pageable", "bytes": nbytes,
            "seconds": m.median, "gbps": nbytes / m.median / 1e9, "repeats": repeats}


def benchmark_median(stmt: str, env: dict, min_run_time: float = 0.5) -> float:
    """torch.utils.benchmark's median seconds for `stmt` (an independent check of `time_op`).

    Uses as many threads as torch does (the Timer's own default is one thread).
    """
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")  # its import warns about CUDA_HOME on CPU machines
    level, _ = log.level, log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    timer = benchmark.Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def _conv_tf32_switch(backends) -> tuple[object, str, tuple[object, object]]:
    """The (object, attribute, (on, off)) that lets cuDNN run float32 convolutions in TF32.

    The `fp32_precision` setting where this torch has it (2.9 and later): once anything in the process
    has set one, reading the legacy `allow_tf32` flags raises RuntimeError.
    """
    conv = getattr(backends.cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):
        return conv, "fp32_precision", ("tf32", "ieee")
    return backends.cudnn, "allow_tf32", (True, False)


def _matmul_precision_state(backends) -> tuple[list[tuple[object, str, object]], str | None]:
    """What `torch.set_float32_matmul_precision` changes, read so that it can be restored.

    The per-backend `fp32_precision` values where this torch has them (reading the global precision
    can raise after one was set on its own), else the global precision.
    """
    found = [(o, "fp32_precision") for o in (backends.cuda.matmul, getattr(getattr(backends, "mkldnn", None), "matmul", None))
             if hasattr(o, "fp32_precision")]
    saved = [(o, a, getattr(o, a)) for o, a in found]
    return saved, None if saved else torch.get_float32_matmul_precision()


@contextmanager
def backend_flags(*, tf32_matmul: bool | None = None, tf32_conv: bool | None = None,
                  benchmark: bool | None = None, deterministic: bool | None = None,
                  backends=torch.backends) -> Iterator[None]:
    """Set PyTorch's backend flags inside the block, then restore them; None leaves a flag as it is.

    `tf32_matmul`: float32 matmuls may use TF32 (`torch.set_float32_matmul_precision("high")`, else
    "highest"): the precision Inductor reads stays consistent, so `torch.compile` works in the block.
    `tf32_conv`: cuDNN may run float32 convolutions in TF32 (PyTorch's default on Ampere and newer).
    `benchmark`: cudnn.benchmark times cuDNN's algorithms on each new shape. `deterministic`:
    `torch.use_deterministic_algorithms` (a warning where an operation has none) and cuDNN's
    deterministic switch. Deterministic cuBLAS also needs CUBLAS_WORKSPACE_CONFIG: set here if absent,
    it satisfies PyTorch's check, but a workspace cuBLAS already got (at this process's first cuBLAS call
    on a stream) keeps its size: for a deterministic run, set it before Python starts.
    """
    conv, name, (on, off) = _conv_tf32_switch(backends)
    matmul = _matmul_precision_state(backends)
    saved = (getattr(conv, name), backends.cudnn.benchmark, backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    set_env = bool(deterministic) and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    if tf32_matmul is not None:
        torch.set_float32_matmul_precision("high" if tf32_matmul else "highest")
    if tf32_conv is not None:
        setattr(conv, name, on if tf32_conv else off)
    if benchmark is not None:
        backends.cudnn.benchmark = benchmark
    if deterministic is not None:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        setattr(conv, name, saved[0])
        backends.cudnn.benchmark, backends.cudnn.deterministic = saved[1], saved[2]
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
        for obj, attr, value in matmul[0]:
            setattr(obj, attr, value)
        if matmul[1] is not None:
            torch.set_float32_matmul_precision(matmul[1])
        if set_env:
            del os.environ["CUBLAS_WORKSPACE_CONFIG"]
