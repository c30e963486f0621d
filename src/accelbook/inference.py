"""Inference, measured: latency and throughput by batch size, ONNX export, ONNX Runtime, int8, TensorRT (chapter 8).

    python -m accelbook.inference                  # train the fast recipe, measure every path, record into results/
    python -m accelbook.inference --quick --out /tmp/i.json   # a smoke run: small subset, short sweep

Every path is timed the same way (`latency`): each call synchronized on its own, so the numbers are what a
caller waiting for its answer sees, p50 and p99 over the calls, and images per second at the median.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .bench import synchronize
from .cli import OneLineParser, UserError, fail, prog, run
from .config import QUICK_ENV
from .data import normalize

BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
INPUT, OUTPUT = "images", "logits"  # the exported graph's input and output names


TAIL_CALLS = 100  # fewer calls than this and the 99th percentile is (close to) the maximum: report the maximum
# int8 rounding moves each logit a little, so it flips the predictions whose top two logits nearly tie: about
# 1 in 100 for the quick profile's one-epoch model, on one thread or two. A broken quantization flips most.
INT8_CHECK_IMAGES, INT8_AGREEMENT = 1024, 0.97


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1-99) of `values`, interpolated between the nearest ranks (statistics.quantiles)."""
    if len(values) < 2:
        return statistics.fmean(values)  # one value is every percentile of itself (none: StatisticsError)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latency(fn: Callable[[], object], batch: int, device: torch.device | str, budget_s: float = 1.0,
            min_calls: int = 5, max_calls: int = 2000) -> dict:
    """p50, p99 and max milliseconds per synchronized call of `fn`, and images/s at the median.

    Calls go on for at least `budget_s` seconds and `min_calls` calls (at most `max_calls`). The 99th
    percentile is reported only from TAIL_CALLS calls or more (None below that: read the maximum instead).
    """
    device = torch.device(device)
    for _ in range(2):  # warm-up: allocation, kernel choice, lazy initialization, compilation
        fn()
    synchronize(device)
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    p50 = statistics.median(times)
    p99 = percentile(times, 99) * 1e3 if len(times) >= TAIL_CALLS else None
    return {"batch": batch, "calls": len(times), "p50_ms": p50 * 1e3, "p99_ms": p99, "max_ms": max(times) * 1e3,
            "images_per_s": batch / p50}


def sweep(make_call: Callable[[int], Callable[[], object]], batches, device: torch.device | str,
          budget_s: float = 1.0) -> list[dict]:
    """`latency` of `make_call(batch)()` for each batch size."""
    return [latency(make_call(b), b, device, budget_s) for b in batches]


def torch_call(model: nn.Module, images: torch.Tensor, device: torch.device) -> Callable[[int], Callable]:
    """For `sweep`: a batch of `images` (normalized, on `device`) through `model` under inference_mode."""
    def make(batch: int) -> Callable[[], torch.Tensor]:
        x = tile(images, batch).to(device)

        def call() -> torch.Tensor:
            with torch.inference_mode():
                return model(x)
        return call
    return make


def tile(images: torch.Tensor, batch: int) -> torch.Tensor:
    """The first `batch` of `images`, repeated when there are fewer (timing only needs the shape)."""
    reps = -(-batch // len(images))
    return images.repeat(reps, *([1] * (images.dim() - 1)))[:batch].contiguous()


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor) -> Path:
    """Export `model` as it is (call eval() first) with torch.export to ONNX: one file, dynamic batch, checked."""
    import onnx

    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                      input_names=[INPUT], output_names=[OUTPUT], external_data=False, verbose=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def operators(path: str | Path) -> Counter:
    """How many nodes of each ONNX operator type the graph in `path` holds."""
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
FALLBACK = {"CPUExecutionProvider": ["CPUExecutionProvider"],  # what each provider is asked with, in order
            "CUDAExecutionProvider": ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "TensorrtExecutionProvider": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


class ProviderFallback(RuntimeError, UserError):
    """ONNX Runtime ran a model, or part of it, on another execution provider than the one asked for."""


def short(provider: str) -> str:
    """'CUDAExecutionProvider' -> 'CUDA': the name a table row shows."""
    return provider.removesuffix("ExecutionProvider")


def ort_provider(device: torch.device | str) -> str:
    """The ONNX Runtime provider for `device`: CUDA for a CUDA device (refused later if it cannot run), else CPU."""
    return PROVIDERS["cuda"] if torch.device(device).type == "cuda" else PROVIDERS["cpu"]


def session(path: str | Path, providers: list[str] | None = None, profile_prefix: str | None = None,
            severity: int = 3):
    """An ONNX Runtime session for the model in `path` (CPU unless `providers` says otherwise).

    `severity` 3 logs errors only, 2 warnings too (a provider's fallback notice); `profile_prefix` turns on
    ONNX Runtime's profiler until `end_profiling()` (it records which provider ran each node). Its CPU work
    uses as many threads as torch's (left to itself, ONNX Runtime picks its own count).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = severity
    options.intra_op_num_threads = torch.get_num_threads()  # as many as the paths it races
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what C++ libraries write to file descriptor 2 (ONNX Runtime's log) into the yielded list."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def provider_session(path: str | Path, provider: str, profile_prefix: str):
    """(session, ONNX Runtime's warnings): a profiled session that asks for `provider` first, then its fallbacks."""
    with captured_stderr() as log:
        sess = session(path, FALLBACK[provider], profile_prefix=profile_prefix, severity=2)
    return sess, log[0].strip() if log else ""


def check_provider(sess, asked: str, log: str = "") -> str:
    """The row name for `sess`; ProviderFallback (with ONNX Runtime's own message) unless it runs on `asked`."""
    actual = sess.get_providers()[0]
    if actual != asked:
        notice = next((line for line in log.splitlines() if "fall" in line.lower() or "fail" in line.lower()),
                      log.splitlines()[0] if log else "no message")
        raise ProviderFallback(f"asked ONNX Runtime for {short(asked)}, it runs {short(actual)}: {notice.strip()}")
    return "TensorRT (ONNX Runtime)" if actual == PROVIDERS["tensorrt"] else f"ONNX Runtime ({short(actual)})"


def node_providers(profile_file: str | Path) -> Counter:
    """How many nodes each execution provider ran, from an ONNX Runtime profile (JSON trace)."""
    events = json.loads(Path(profile_file).read_text())
    return Counter(e["args"]["provider"] for e in events
                   if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                   and "provider" in e.get("args", {}) and not e["args"].get("op_name", "").startswith("Memcpy"))


def check_placement(sess, call: Callable[[], object], asked: str) -> Counter:
    """Run `call` once with the session's profiler on: ProviderFallback if a node ran off `asked` (copies aside)."""
    call()
    counts = node_providers(sess.end_profiling())
    others = {short(p): n for p, n in counts.items() if p != asked}
    if others or not counts:
        raise ProviderFallback(f"asked ONNX Runtime for {short(asked)}, but inside run() nodes ran on "
                               f"{others or 'no provider it profiled'}: {dict(counts)}")
    return counts


def onnx_logits(sess, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits from an ONNX Runtime session for float32 images (N, 1, 28, 28)."""
    x = images.numpy() if isinstance(images, torch.Tensor) else images
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


def check_int8(sess, model: nn.Module, images: torch.Tensor, device: torch.device) -> float:
    """Share of `images` where the int8 session predicts eager `model`'s class (AssertionError if too low)."""
    with torch.inference_mode():
        expected = model(images.to(device)).argmax(1).cpu().numpy()
    agree = float((onnx_logits(sess, images).argmax(1) == expected).mean())
    if agree < INT8_AGREEMENT:
        raise AssertionError(f"int8 predictions agree with eager PyTorch on only {agree:.1%} of "
                             f"{len(images):,} images (a rounded model agrees on {INT8_AGREEMENT:.0%} or more)")
    return agree


def bind(sess, x: torch.Tensor, y: torch.Tensor):
    """An I/O binding of the session's input to tensor `x` and its output to `y`, in place on their device."""
    binding = sess.io_binding()
    for bind_one, name, t in ((binding.bind_input, sess.get_inputs()[0].name, x),
                              (binding.bind_output, sess.get_outputs()[0].name, y)):
        bind_one(name=name, device_type=t.device.type, device_id=t.device.index or 0, element_type=np.float32,
                 shape=tuple(t.shape), buffer_ptr=t.data_ptr())
    return binding


def ort_call(sess, images: torch.Tensor, device: torch.device | str = "cpu") -> Callable[[int], Callable]:
    """For `sweep`: a batch of `images` through an ONNX Runtime session, input and output bound on `device`.

    On a GPU the images wait in device memory and the logits are written there (I/O binding), so the time
    holds no host-device copies, as PyTorch's does not; on the CPU binding is plain host memory.
    """
    device = torch.device(device)

    def make(batch: int) -> Callable[[], torch.Tensor]:
        x = tile(images, batch).to(device).contiguous()
        y = torch.empty((batch, 10), device=device)
        binding = bind(sess, x, y)
        synchronize(device)  # x is written before ONNX Runtime, on its own stream, reads it

        def call() -> torch.Tensor:
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the logits are written (ONNX Runtime's stream) before the clock stops
            return y
        call.tensors = (x, y)  # the binding holds raw pointers: keep the tensors alive as long as the call
        return call
    return make


def check_outputs(name: str, got: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor,
                  tolerance: float) -> float:
    """The largest |got - expected|; AssertionError naming the path unless allclose at rtol = atol = `tolerance`."""
    got, expected = (np.asarray(torch.as_tensor(a).detach().float().cpu()) for a in (got, expected))
    diff = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=tolerance, atol=tolerance):
        raise AssertionError(f"{name} disagrees with eager PyTorch: largest difference {diff:.2e} > {tolerance}")
    return diff


def predict_all(sess, uint8_images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    """Predicted classes of an ONNX Runtime session over uint8 images (N, 28, 28), in batches."""
    return np.concatenate([onnx_logits(sess, normalize(uint8_images[i:i + batch])).argmax(1)
                           for i in range(0, len(uint8_images), batch)])


class Calibration:
    """ONNX Runtime's calibration data reader over uint8 MNIST images, normalized like training."""

    def __init__(self, uint8_images: torch.Tensor, batch: int = 64):
        self.batches = iter([{INPUT: normalize(uint8_images[i:i + batch]).numpy()}
                             for i in range(0, len(uint8_images), batch)])

    def get_next(self) -> dict | None:
        """The next calibration batch, or None when done."""
        return next(self.batches, None)


def quantize_int8(source: str | Path, target: str | Path, calibration: torch.Tensor) -> Path:
    """Post-training static int8 quantization with ONNX Runtime (QDQ, per-channel weights), calibrated on images."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    target = Path(target)
    prepared = target.with_name(target.stem + "-prepared.onnx")
    quant_pre_process(str(source), str(prepared))  # shape inference and graph clean-up before calibration
    quantize_static(str(prepared), str(target), Calibration(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    prepared.unlink()
    return target


def file_bytes(path: str | Path) -> int:
    """Size of an ONNX model on disk, its external-data file included when it has one."""
    path = Path(path)
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)


def int8_instructions() -> list[str] | None:
    """The CPU's integer dot-product instruction sets (VNNI, AMX) from its flags; None where it cannot tell."""
    from .formats import cpu_flags

    flags = cpu_flags()
    return [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags] if flags else None


def onnx_bytes(path: str | Path) -> dict[str, int]:
    """Bytes of an ONNX file by kind: weights, their scales and zero points, other tensors, and the graph itself."""
    import onnx
    from onnx import numpy_helper

    parts = {"weights": 0, "scales and zero points": 0, "biases and other tensors": 0}
    for init in onnx.load(str(path)).graph.initializer:
        array = numpy_helper.to_array(init)
        if init.name.endswith(("_scale", "_zero_point")):
            parts["scales and zero points"] += array.nbytes
        elif array.ndim >= 2:  # convolution kernels and the linear layer's matrix
            parts["weights"] += array.nbytes
        else:
            parts["biases and other tensors"] += array.nbytes
    parts["graph, names and metadata"] = file_bytes(path) - sum(parts.values())
    return parts


def saved_bytes(model: nn.Module, x: torch.Tensor, mode: Callable = torch.enable_grad) -> int:
    """Bytes of unique storage autograd keeps for backward in one forward pass under `mode` (shared: counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), mode():
        model(x)
    return sum(storages.values())


def tensorrt_unavailable(device: torch.device | str) -> str | None:
    """Why TensorRT cannot run here (one line), or None when ONNX Runtime's TensorRT provider can."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return ("TensorRT is not available here: it needs an NVIDIA GPU (CUDA), onnxruntime-gpu and "
                "TensorRT's libraries.")
    import onnxruntime as ort

    if PROVIDERS["tensorrt"] not in ort.get_available_providers():
        return ("TensorRT is not available here: this onnxruntime has no TensorrtExecutionProvider; install "
                "onnxruntime-gpu (in place of onnxruntime) and TensorRT's libraries.")
    return None


def compiled(model: nn.Module, device: torch.device | str) -> dict[str, nn.Module]:
    """The torch.compile variants to time on `device`: the default mode, and on CUDA also CUDA graphs.

    The default mode fuses operators into generated kernels but still launches each one from Python's side;
    only mode="reduce-overhead" records CUDA graphs, which replay a whole forward pass as one launch.
    """
    variants = {"torch.compile": torch.compile(model, dynamic=True)}
    if torch.device(device).type == "cuda":
        variants["torch.compile (reduce-overhead)"] = torch.compile(model, mode="reduce-overhead")
    return variants


def ort_path(path: str | Path, provider: str, images: torch.Tensor, device: torch.device | str,
             reference: torch.Tensor, folder: str | Path, tolerance: float) -> tuple[str, Callable, float]:
    """(row name, `sweep` call, largest difference): an ONNX Runtime path checked before it is timed.

    It refuses (ProviderFallback) a session that ONNX Runtime created on another provider or that ran any node
    elsewhere, and (AssertionError) logits not allclose to `reference`, eager PyTorch's for images[:len(reference)].
    """
    sess, log = provider_session(path, provider, str(Path(folder) / f"profile-{short(provider)}"))
    name = check_provider(sess, provider, log)
    first = ort_call(sess, images[:len(reference)], device)(len(reference))
    check_placement(sess, first, provider)
    diff = check_outputs(name, first(), reference, tolerance)
    return name, ort_call(sess, images, device), diff


def measure_paths(model: nn.Module, images: torch.Tensor, device: torch.device, folder: str | Path,
                  calibration: torch.Tensor, batches=BATCHES, budget_s: float = 1.0,
                  compile_model: bool = True, notes: dict | None = None) -> list[dict]:
    """Every inference path on `device` over `batches`: one row per (path, batch), each path checked first.

    `images` are normalized float images on the CPU; `calibration` uint8 images for int8. Paths: eager
    PyTorch, torch.compile (and its CUDA-graph mode on CUDA), ONNX Runtime on the device's provider (I/O bound
    on a GPU), ONNX Runtime int8 on the CPU, and TensorRT through ONNX Runtime where it can run. Before timing,
    each path's logits on 256 images are compared with eager PyTorch's (int8: its predictions on 1,024, `check_int8`);
    a path that disagrees, or an ONNX Runtime session that falls back to another provider, stops the run;
    except TensorRT, which ONNX Runtime lists even without its libraries: why it was not timed goes to
    `notes["tensorrt"]` (None when it was).
    """
    folder, device = Path(folder), torch.device(device)
    model = model.eval().to(device)
    fp32 = export_onnx(model.cpu(), folder / "model.onnx", images[:2])
    model = model.to(device)
    int8 = quantize_int8(fp32, folder / "model-int8.onnx", calibration)
    check = images[:256]
    with torch.inference_mode():
        reference = model(check.to(device)).float().cpu()
    gpu = device.type == "cuda"
    tol = 1e-2 if gpu else 1e-3  # GPU kernels may use TF32 for fp32 convolutions
    paths = {"eager": (torch_call(model, images, device), device, 0.0)}
    if compile_model:
        for name, net in compiled(model, device).items():
            with torch.inference_mode():
                got = net(check.to(device)).clone()
            paths[name] = (torch_call(net, images, device), device, check_outputs(name, got, reference, tol))
    name, call, diff = ort_path(fp32, ort_provider(device), images, device, reference, folder, tol)
    paths[name] = (call, device, diff)
    sess8 = session(int8)
    check_int8(sess8, model, images[:INT8_CHECK_IMAGES], device)
    paths["ONNX Runtime int8 (CPU)"] = (ort_call(sess8, images), torch.device("cpu"), None)
    trt_note = tensorrt_unavailable(device)
    if trt_note is None:
        try:
            name, call, diff = ort_path(fp32, PROVIDERS["tensorrt"], images, device, reference, folder, tol)
            paths[name] = (call, device, diff)
        except ProviderFallback as err:  # listed by ONNX Runtime, but its libraries are missing
            trt_note = f"TensorRT not timed: {err}"
    if notes is not None:
        notes["tensorrt"] = trt_note
    rows = []
    for name, (make, dev, diff) in paths.items():
        rows += [{"path": name, "max_abs_diff": diff, **row} for row in sweep(make, batches, dev, budget_s)]
    return rows


def table(rows: list[dict]) -> str:
    """Rows of `measure_paths` as a text table: one line per path and batch (p99 only from 100 calls or more)."""
    lines = [f"{'path':<32} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'images/s':>10} {'calls':>5}"]
    for r in rows:
        p99, top = (f"{r[k]:>9.3f}" if r.get(k) is not None else f"{'-':>9}" for k in ("p99_ms", "max_ms"))
        lines.append(f"{r['path']:<32} {r['batch']:>5} {r['p50_ms']:>9.3f} {p99} {top} "
                     f"{r['images_per_s']:>10,.0f} {r['calls']:>5}")
    return "\n".join(lines)


def build_parser() -> OneLineParser:
    """The command line of `python -m accelbook.inference`."""
    p = OneLineParser(prog=prog("inference"),
                      description="Train the fast recipe, then time every inference path by batch size.")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run ({QUICK_ENV}=1 too): the quick profile's "
                   "images, one epoch, batches up to 256, short timing")
    p.add_argument("--out", help="record path (default: results/inference-<device>-<date>.json)")
    p.add_argument("--no-record", action="store_true", help="print the table only")
    p.add_argument("--export", metavar="MODEL.onnx",
                   help="train, export the model to this file (what python -m accelbook.predict reads) and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: train, export, quantize, time each path, print the table and write the record."""
    argv = sys.argv[1:] if argv is None else argv
    return run(build_parser(), lambda args: train_and_time(args, argv), argv)


def train_and_time(args, argv: list[str]) -> int:
    """Train the fast recipe; export it (--export) or time every path and write the record."""
    from dataclasses import replace

    from .config import QUICK, profile
    from .data import Data
    from .device import pick_device
    from .recipes import FAST, train_recipe
    from .records import default_path, provenance, save_record

    device = pick_device(args.device, verbose=False)
    if args.export and not Path(args.export).resolve().parent.is_dir():
        raise UserError(f"cannot write {args.export}: no such folder")
    quick = profile(args.quick) is QUICK
    data = Data.load(limit=profile(args.quick).images)
    trained = train_recipe(replace(FAST, epochs=1.0) if quick else FAST, device, data)  # a smoke run: one epoch
    images = normalize(data.test_images[:4096])
    if args.export:
        path = export_onnx(trained.model.eval().cpu(), args.export, images[:2])
        print(f"wrote {path} (test accuracy {trained.test_accuracy:.2%}); read a digit with "
              f"python -m accelbook.predict IMAGE --model {path}")
        return 0
    batches = BATCHES[:5] if quick else BATCHES
    notes: dict = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            rows = measure_paths(trained.model, images, device, folder, data.images[data.train_idx[:512]], batches,
                                 0.2 if quick else 1.0, notes=notes)
    except AssertionError as err:  # a path that is not what its row would say: no record
        return fail(prog("inference"), err)
    print(table(rows))
    if not args.no_record:
        record = {"provenance": provenance(device, argv, kind="inference"), "kind": "inference", "quick": quick,
                  "test_accuracy": trained.test_accuracy, "tensorrt": notes.get("tensorrt"),
                  "timing": ("each call synchronized; ONNX Runtime on a GPU with I/O binding: inputs and outputs "
                             "in device memory, no host copies timed, as for PyTorch"), "rows": rows}
        print(f"wrote {save_record(record, args.out or default_path('inference', device))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
