"""Inference, measured: latency and throughput by batch size, ONNX export, ONNX Runtime, int8, TensorRT (chapter 8).

    python -m accelbook.inference                  # train the fast recipe, measure every path, record into results/
    python -m accelbook.inference --quick --out /tmp/i.json   # a smoke run: small subset, short sweep

Every path is timed the same way (`latency`): each call synchronised on its own, so the numbers are what a
caller waiting for its answer sees, p50 and p99 over the calls, and images per second at the median.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .bench import synchronize
from .cli import OneLineParser
from .data import normalize

BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
INPUT, OUTPUT = "images", "logits"  # the exported graph's input and output names


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1-99) of `values`, interpolated between the nearest ranks (statistics.quantiles)."""
    if len(values) < 2:
        return statistics.fmean(values)  # one value is every percentile of itself (none: StatisticsError)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latency(fn: Callable[[], object], batch: int, device: torch.device | str, budget_s: float = 1.0,
            min_calls: int = 5, max_calls: int = 300) -> dict:
    """p50/p99 milliseconds per synchronised call of `fn` and images/s at the median, within about `budget_s`."""
    device = torch.device(device)
    for _ in range(2):  # warm-up: allocation, kernel choice, lazy initialisation
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
    return {"batch": batch, "calls": len(times), "p50_ms": p50 * 1e3, "p99_ms": percentile(times, 99) * 1e3,
            "images_per_s": batch / p50}


def sweep(make_call: Callable[[int], Callable[[], object]], batches, device: torch.device | str,
          budget_s: float = 1.0) -> list[dict]:
    """`latency` of `make_call(batch)()` for each batch size."""
    return [latency(make_call(b), b, device, budget_s) for b in batches]


def torch_call(model: nn.Module, images: torch.Tensor, device: torch.device) -> Callable[[int], Callable]:
    """For `sweep`: a batch of `images` (normalised, on `device`) through `model` under inference_mode."""
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


def ort_providers(device: torch.device | str) -> list[str]:
    """ONNX Runtime providers for `device`: CUDA first where this onnxruntime has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if torch.device(device).type == "cuda" else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def session(path: str | Path, providers: list[str] | None = None):
    """An ONNX Runtime inference session for the model in `path` (CPU unless `providers` says otherwise)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the providers' notices are not the reader's concern
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def run(sess, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits from an ONNX Runtime session for float32 images (N, 1, 28, 28)."""
    x = images.numpy() if isinstance(images, torch.Tensor) else images
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


def ort_call(sess, images: torch.Tensor) -> Callable[[int], Callable]:
    """For `sweep`: a batch of `images` (normalised, on the CPU) through an ONNX Runtime session."""
    def make(batch: int) -> Callable[[], np.ndarray]:
        x = tile(images.cpu(), batch).numpy()
        return lambda: run(sess, x)
    return make


def predict_all(sess, uint8_images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    """Predicted classes of an ONNX Runtime session over uint8 images (N, 28, 28), in batches."""
    return np.concatenate([run(sess, normalize(uint8_images[i:i + batch])).argmax(1)
                           for i in range(0, len(uint8_images), batch)])


class Calibration:
    """ONNX Runtime's calibration data reader over uint8 MNIST images, normalised like training."""

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
    """The CPU's integer dot-product instruction sets (VNNI, AMX) from /proc/cpuinfo; None where it cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]


def tensorrt_unavailable(device: torch.device | str) -> str | None:
    """Why TensorRT cannot run here (one line), or None when ONNX Runtime's TensorRT provider can."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return "TensorRT is not available here: it needs an NVIDIA GPU (CUDA) and onnxruntime-gpu or torch-tensorrt."
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        extra = " (torch-tensorrt is installed: see the chapter's exercise)" \
            if importlib.util.find_spec("torch_tensorrt") else ""
        return ("TensorRT is not available here: this onnxruntime has no TensorrtExecutionProvider; install "
                f"onnxruntime-gpu with TensorRT's libraries{extra}.")
    return None


def measure_paths(model: nn.Module, images: torch.Tensor, device: torch.device, folder: str | Path,
                  calibration: torch.Tensor, batches=BATCHES, budget_s: float = 1.0,
                  compile_model: bool = True) -> list[dict]:
    """Every inference path on `device` over `batches`: one row per (path, batch) with what `latency` measures.

    `images` are normalised float images on the CPU; `calibration` uint8 images for int8. Paths: eager
    PyTorch, torch.compile, ONNX Runtime (its best provider for the device), ONNX Runtime int8 on the CPU,
    and TensorRT through ONNX Runtime where `tensorrt_unavailable` says it can run.
    """
    folder = Path(folder)
    model = model.eval().to(device)
    fp32 = export_onnx(model.cpu(), folder / "model.onnx", images[:2])
    model = model.to(device)
    int8 = quantize_int8(fp32, folder / "model-int8.onnx", calibration)
    paths = {"eager": (torch_call(model, images, device), device)}
    if compile_model:
        paths["torch.compile"] = (torch_call(torch.compile(model, dynamic=True), images, device), device)
    providers = ort_providers(device)
    paths[f"ONNX Runtime ({providers[0].removesuffix('ExecutionProvider')})"] = (
        ort_call(session(fp32, providers), images), device)
    paths["ONNX Runtime int8 (CPU)"] = (ort_call(session(int8), images), torch.device("cpu"))
    if tensorrt_unavailable(device) is None:
        trt = session(fp32, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
        paths["TensorRT (ONNX Runtime)"] = (ort_call(trt, images), device)
    rows = []
    for name, (make, dev) in paths.items():
        rows += [{"path": name, **row} for row in sweep(make, batches, dev, budget_s)]
    return rows


def table(rows: list[dict]) -> str:
    """Rows of `measure_paths` as a text table: one line per path and batch."""
    lines = [f"{'path':<28} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'images/s':>10} {'calls':>5}"]
    for r in rows:
        lines.append(f"{r['path']:<28} {r['batch']:>5} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} "
                     f"{r['images_per_s']:>10,.0f} {r['calls']:>5}")
    return "\n".join(lines)


def parser() -> OneLineParser:
    """The command line of `python -m accelbook.inference`."""
    p = OneLineParser(prog="python -m accelbook.inference",
                      description="Train the fast recipe, then time every inference path by batch size.")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--quick", action="store_true", help="a smoke run: small subset, batches up to 256, short timing")
    p.add_argument("--out", help="record path (default: results/inference-<device>-<date>.json)")
    p.add_argument("--no-record", action="store_true", help="print the table only")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: train, export, quantize, time each path, print the table and write the record."""
    import tempfile
    from dataclasses import replace

    from .device import pick_device
    from .recipes import FAST, Data, train_recipe
    from .records import default_path, provenance, save_record

    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    try:
        device = pick_device(args.device, verbose=False)
        data = Data.load(limit=4000 if args.quick else None)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    trained = train_recipe(replace(FAST, epochs=1.0) if args.quick else FAST, device, data)
    images = normalize(data.test_images[:4096])
    batches = BATCHES[:5] if args.quick else BATCHES
    with tempfile.TemporaryDirectory() as folder:
        rows = measure_paths(trained.model, images, device, folder, data.images[data.train_idx[:512]], batches,
                             0.2 if args.quick else 1.0)
    print(table(rows))
    if not args.no_record:
        record = {"provenance": provenance(device, argv, kind="inference"), "kind": "inference", "quick": args.quick,
                  "test_accuracy": trained.test_accuracy, "tensorrt": tensorrt_unavailable(device), "rows": rows}
        print(f"wrote {save_record(record, args.out or default_path('inference', device))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
