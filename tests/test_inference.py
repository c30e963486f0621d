"""Chapter 8's parts on real MNIST: the ONNX export (dynamic batch), int8 accuracy, the predictor and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from accelbook import inference, predict
from accelbook.data import normalize
from accelbook.models import ConvNet


@pytest.fixture(scope="module")
def data(mnist_subset):
    """MNIST: the shared 12,000-image training subset and the first 2,000 test images."""
    return mnist_subset


@pytest.fixture(scope="module")
def exported(fast_model, data, tmp_path_factory):
    """The shared one-epoch model, exported to ONNX and quantized to int8."""
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = inference.export_onnx(fast_model, folder / "model.onnx", normalize(data.test_images[:2]))
    int8 = inference.quantize_int8(fp32, folder / "model-int8.onnx", data.images[data.train_idx[:512]])
    return fast_model, fp32, int8


def test_export_matches_pytorch_for_two_batch_sizes(data, tmp_path):
    torch.manual_seed(0)
    model = ConvNet().eval()
    path = inference.export_onnx(model, tmp_path / "m.onnx", normalize(data.test_images[:3]))
    sess = inference.session(path)
    for batch in (1, 257):  # neither is the example's batch of 3: the batch dimension really is dynamic
        x = normalize(data.test_images[:batch])
        with torch.inference_mode():
            expected = model(x).numpy()
        got = inference.onnx_logits(sess, x)
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert inference.operators(path)["Conv"] == 4


def test_int8_accuracy_close_to_fp32(data, exported):
    _, fp32, int8 = exported
    labels = data.test_labels.numpy()
    acc = {name: (inference.predict_all(inference.session(p), data.test_images) == labels).mean()
           for name, p in (("fp32", fp32), ("int8", int8))}
    assert acc["fp32"] > 0.9, acc
    assert abs(acc["int8"] - acc["fp32"]) <= 0.01, acc  # within one percentage point on 2,000 real test images
    assert inference.file_bytes(int8) < inference.file_bytes(fp32)


def test_ort_predictions_agree_with_pytorch(data, exported):
    model, fp32, _ = exported
    with torch.inference_mode():
        expected = model(normalize(data.test_images)).argmax(1).numpy()
    assert (inference.predict_all(inference.session(fp32), data.test_images) == expected).all()


def test_latency_counts_calls_and_orders_percentiles():
    row = inference.latency(lambda: sum(range(1000)), batch=8, device="cpu", budget_s=0.05, min_calls=5)
    assert row["calls"] >= inference.TAIL_CALLS and row["max_ms"] >= row["p99_ms"] >= row["p50_ms"] > 0
    assert row["images_per_s"] == pytest.approx(8 / (row["p50_ms"] / 1e3))
    assert inference.percentile([1, 2, 3, 4], 50) == 2.5 and inference.percentile([5], 99) == 5


def test_latency_reports_no_p99_from_few_calls():
    # Five calls: their 99th percentile is their maximum, so the row says so instead of printing a "p99".
    row = inference.latency(lambda: time.sleep(0.01), batch=1, device="cpu", budget_s=0.0, min_calls=5)
    assert row["calls"] == 5 and row["p99_ms"] is None and row["max_ms"] >= row["p50_ms"]
    line = inference.table([{"path": "slow", **row}]).splitlines()[1].split()
    assert line[3] == "-", line  # the p99 column


def test_tensorrt_reason_on_cpu():
    reason = inference.tensorrt_unavailable("cpu")
    assert "needs an NVIDIA GPU" in reason and "exercise" not in reason


class FakeSession:
    """What ONNX Runtime returns when asked for CUDA without it: a session whose first provider is the CPU."""

    def __init__(self, providers, profile=None):
        self.providers, self.profile = providers, profile

    def get_providers(self):
        return self.providers

    def end_profiling(self):
        return self.profile


FALLBACK_LOG = ("2026-12-02 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1023 CreateExecutionProviderInstance] "
                "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 12.*\n")


def test_a_session_that_fell_back_is_refused_with_onnxruntimes_message():
    cuda = inference.PROVIDERS["cuda"]
    with pytest.raises(inference.ProviderFallback, match="asked ONNX Runtime for CUDA, it runs CPU: .*Failed to create"):
        inference.check_provider(FakeSession(["CPUExecutionProvider"]), cuda, FALLBACK_LOG)
    assert inference.check_provider(FakeSession([cuda, "CPUExecutionProvider"]), cuda) == "ONNX Runtime (CUDA)"
    trt = inference.PROVIDERS["tensorrt"]
    assert inference.check_provider(FakeSession([trt, cuda]), trt) == "TensorRT (ONNX Runtime)"
    with pytest.raises(inference.ProviderFallback, match="for Tensorrt, it runs CUDA"):
        inference.check_provider(FakeSession([cuda, "CPUExecutionProvider"]), trt)


def profile_file(path, placements):
    """An ONNX Runtime profile (JSON trace) in which node i ran on placements[i]."""
    events = [{"cat": "Session", "name": "model_run", "args": {}}]
    events += [{"cat": "Node", "name": f"n{i}_kernel_time", "args": {"op_name": "Conv", "provider": p}}
               for i, p in enumerate(placements)]
    path.write_text(json.dumps(events))
    return path


def test_nodes_that_ran_on_another_provider_inside_run_are_refused(tmp_path):
    cuda = inference.PROVIDERS["cuda"]
    mixed = FakeSession([cuda], profile_file(tmp_path / "p.json", [cuda, "CPUExecutionProvider", cuda]))
    with pytest.raises(inference.ProviderFallback, match="inside run.*CPU"):
        inference.check_placement(mixed, lambda: None, cuda)
    clean = FakeSession([cuda], profile_file(tmp_path / "q.json", [cuda, cuda]))
    assert inference.check_placement(clean, lambda: None, cuda) == {cuda: 2}


def test_a_session_uses_as_many_threads_as_torch(exported):
    """ONNX Runtime is timed against PyTorch on the same CPU threads, not on a count of its own."""
    _, fp32, _ = exported
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert inference.session(fp32).get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(threads)


def test_a_real_cpu_session_is_checked_named_and_bound(data, exported, tmp_path):
    model, fp32, _ = exported
    x = normalize(data.test_images[:300])
    with torch.inference_mode():
        reference = model(x[:64])
    name, make, diff = inference.ort_path(fp32, "CPUExecutionProvider", x, "cpu", reference, tmp_path, 1e-3)
    assert name == "ONNX Runtime (CPU)" and diff < 1e-3
    bound = make(300)()  # I/O binding on host memory gives what run() gives
    np.testing.assert_allclose(bound.numpy(), inference.onnx_logits(inference.session(fp32), x), rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError, match="disagrees with eager"):
        inference.ort_path(fp32, "CPUExecutionProvider", x, "cpu", reference + 0.1, tmp_path, 1e-3)


def test_measure_paths_checks_each_path_before_timing(data, exported, tmp_path, monkeypatch):
    model, _, _ = exported
    x = normalize(data.test_images[:256])
    calibration = data.images[data.train_idx[:64]]
    broken = ConvNet().eval()  # untrained weights: its logits disagree with the trained model's
    monkeypatch.setattr(inference, "compiled", lambda net, device: {"torch.compile": broken})
    with pytest.raises(AssertionError, match="torch.compile disagrees with eager"):
        inference.measure_paths(model, x, torch.device("cpu"), tmp_path, calibration, batches=(1,), budget_s=0.0)


def test_int8_check_passes_rounding_and_refuses_other_weights(data, exported, tmp_path):
    model, fp32, int8 = exported
    x = normalize(data.test_images[:inference.INT8_CHECK_IMAGES])
    assert inference.check_int8(inference.session(int8), model, x, torch.device("cpu")) >= inference.INT8_AGREEMENT
    torch.manual_seed(0)  # a quantization of other (untrained) weights stands for a broken one
    other = inference.export_onnx(ConvNet().eval(), tmp_path / "other.onnx", x[:2])
    wrong = inference.quantize_int8(other, tmp_path / "other-int8.onnx", data.images[data.train_idx[:64]])
    with pytest.raises(AssertionError, match="int8 predictions agree with eager PyTorch on only"):
        inference.check_int8(inference.session(wrong), model, x, torch.device("cpu"))


def test_compiled_variants_by_device():
    model = ConvNet().eval()
    assert list(inference.compiled(model, "cpu")) == ["torch.compile"]
    assert list(inference.compiled(model, "cuda")) == ["torch.compile", "torch.compile (reduce-overhead)"]


def test_captured_stderr_sees_what_a_library_writes_to_descriptor_2():
    with inference.captured_stderr() as log:
        os.write(2, b"[W:onnxruntime] falling back\n")
    assert log == ["[W:onnxruntime] falling back\n"]


def test_saved_bytes_counts_a_tensor_saved_twice_once():
    w1, w2 = torch.ones(1000, requires_grad=True), torch.ones(1000, requires_grad=True)
    x = torch.randn(1000)
    def both(t):  # each product saves x, for its weight's gradient: one storage, saved twice
        return t * w1 + t * w2

    assert inference.saved_bytes(both, x) == 4000  # counted once (a sum over saved tensors gives 8,000)
    assert inference.saved_bytes(both, x, torch.no_grad) == 0


def test_int8_file_is_weights_and_a_small_overhead(exported):
    _, fp32, int8 = exported
    parts8, parts32 = inference.onnx_bytes(int8), inference.onnx_bytes(fp32)
    assert parts8["weights"] * 4 == parts32["weights"]  # a quarter: one byte per weight instead of four
    assert parts8["scales and zero points"] < 10_000  # per-channel scales: a few kilobytes
    assert sum(parts8.values()) == inference.file_bytes(int8)


def save_png(array: np.ndarray, path, invert: bool = False):
    """A uint8 (28, 28) MNIST digit as a PNG, optionally black on white, enlarged to 112 x 112."""
    img = Image.fromarray(255 - array if invert else array).resize((112, 112), Image.BILINEAR)
    img.save(path)
    return path


def test_predictor_reads_real_digits(data, exported, tmp_path):
    _, fp32, _ = exported
    sess = predict.load_model(fp32)
    for i in range(6):
        array, label = data.test_images[i].numpy(), int(data.test_labels[i])
        for invert in (False, True):
            digit, probs = predict.read_digit(sess, save_png(array, tmp_path / f"{i}-{invert}.png", invert))
            assert digit == label, (i, invert, probs)
            assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_predictor_reads_transparent_and_jpeg_images(data, exported, tmp_path):
    _, fp32, _ = exported
    sess = predict.load_model(fp32)
    array, label = data.test_images[3].numpy(), int(data.test_labels[3])
    ink = Image.fromarray(array).resize((112, 112), Image.BILINEAR)
    drawn = Image.new("RGBA", (112, 112), (0, 0, 0, 0))  # black strokes on a transparent canvas
    drawn.putalpha(ink)
    drawn.save(tmp_path / "transparent.png")
    Image.fromarray(255 - array).convert("RGB").resize((140, 140)).save(tmp_path / "scan.jpg", quality=85)
    for name in ("transparent.png", "scan.jpg"):
        digit, probs = predict.read_digit(sess, tmp_path / name)
        assert digit == label, (name, probs)


def test_prepared_digit_is_mnist_like(data, tmp_path):
    array = data.test_images[0].numpy()
    prepared = predict.to_mnist(predict.load_gray(save_png(array, tmp_path / "d.png", invert=True)))
    assert prepared.shape == (28, 28) and prepared.max() == pytest.approx(1.0, abs=0.05)
    ys, xs = np.nonzero(prepared > 0.2)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 21  # the 20-pixel box (plus resampling)
    corr = np.corrcoef(prepared.ravel(), array.ravel() / 255.0)[0, 1]
    assert corr > 0.8, corr  # a real MNIST digit comes back close to itself


def run_cli(*args, cwd=None):
    """`python -m accelbook.predict ...` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "accelbook.predict", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_predictor_command_and_its_errors(data, exported, tmp_path):
    _, fp32, _ = exported
    good = save_png(data.test_images[1].numpy(), tmp_path / "two.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    done = run_cli(good, "--model", fp32)
    assert done.returncode == 0 and done.stdout.startswith(f"{good}: {int(data.test_labels[1])} ("), done
    cases = [((tmp_path / "missing.png",), "no such file"), ((text,), "not an image"), ((blank,), "blank")]
    for args, words in cases:
        done = run_cli(*args, "--model", fp32)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1
    done = run_cli(good, "--model", tmp_path / "absent.onnx")
    assert done.returncode == 2 and "no model at" in done.stderr and "Traceback" not in done.stderr
    done = run_cli(good, "--model", text)
    assert done.returncode == 2 and "not an ONNX model" in done.stderr and "Traceback" not in done.stderr


def test_inference_command_writes_a_record(tmp_path):
    out = tmp_path / "inference.json"
    done = subprocess.run([sys.executable, "-m", "accelbook.inference", "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["kind"] == "inference" and record["provenance"]["device"] == "cpu"
    paths = {r["path"] for r in record["rows"]}
    assert paths == {"eager", "torch.compile", "ONNX Runtime (CPU)", "ONNX Runtime int8 (CPU)"}
    assert all(r["max_ms"] >= r["p50_ms"] > 0 for r in record["rows"])
    assert all(r["p99_ms"] is None or r["calls"] >= inference.TAIL_CALLS for r in record["rows"])
    assert all(r["max_abs_diff"] is None or r["max_abs_diff"] < 1e-3 for r in record["rows"])
    assert "needs an NVIDIA GPU" in record["tensorrt"]


def test_export_command_leaves_the_model_the_predictor_reads(data, tmp_path):
    done = subprocess.run([sys.executable, "-m", "accelbook.inference", "--quick", "--device", "cpu", "--export",
                           "mnist-convnet.onnx"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "mnist-convnet.onnx").is_file(), done.stderr[-2000:]
    digit = save_png(data.test_images[0].numpy(), tmp_path / "digit.png")
    read = run_cli(digit, cwd=tmp_path)  # no --model: the default name the FAQ's command uses
    assert read.returncode == 0 and read.stdout.startswith(f"{digit}: "), read


def test_inference_command_errors_are_one_line():
    done = subprocess.run([sys.executable, "-m", "accelbook.inference", "--device", "tpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_tensorrt_listed_but_falling_back_costs_no_row_and_is_noted(data, exported, tmp_path, monkeypatch):
    """ONNX Runtime lists TensorRT without its libraries: that path is noted, the other rows are still timed."""
    model, _, _ = exported
    x = normalize(data.test_images[:256])
    calibration = data.images[data.train_idx[:64]]
    real = inference.ort_path

    def ort_path(path, provider, *args):
        if provider == inference.PROVIDERS["tensorrt"]:
            raise inference.ProviderFallback("asked for TensorRT, ONNX Runtime created CUDA")
        return real(path, provider, *args)

    monkeypatch.setattr(inference, "tensorrt_unavailable", lambda device: None)  # as if listed
    monkeypatch.setattr(inference, "ort_path", ort_path)
    notes = {}
    rows = inference.measure_paths(model, x, torch.device("cpu"), tmp_path, calibration, batches=(1,),
                                   budget_s=0.0, compile_model=False, notes=notes)
    assert {r["path"] for r in rows} >= {"eager", "ONNX Runtime (CPU)", "ONNX Runtime int8 (CPU)"}
    assert "TensorRT not timed" in notes["tensorrt"] and "created CUDA" in notes["tensorrt"]
