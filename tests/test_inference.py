"""Chapter 8's parts on real MNIST: the ONNX export (dynamic batch), int8 accuracy, the predictor and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from accelbook import inference, predict
from accelbook.data import normalize
from accelbook.models import ConvNet
from accelbook.recipes import FAST, Data, train_recipe


@pytest.fixture(scope="module")
def data() -> Data:
    """MNIST: a 12,000-image training subset and the first 2,000 test images."""
    full = Data.load()
    return replace(full, train_idx=full.train_idx[:12000], test_images=full.test_images[:2000],
                   test_labels=full.test_labels[:2000])


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """The fast recipe trained one epoch on the subset, exported to ONNX and quantized to int8."""
    trained = train_recipe(replace(FAST, epochs=1.0), torch.device("cpu"), data)
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = inference.export_onnx(trained.model.eval(), folder / "model.onnx", normalize(data.test_images[:2]))
    int8 = inference.quantize_int8(fp32, folder / "model-int8.onnx", data.images[data.train_idx[:512]])
    return trained.model.eval(), fp32, int8


def test_export_matches_pytorch_for_two_batch_sizes(data, tmp_path):
    torch.manual_seed(0)
    model = ConvNet().eval()
    path = inference.export_onnx(model, tmp_path / "m.onnx", normalize(data.test_images[:3]))
    sess = inference.session(path)
    for batch in (1, 257):  # neither is the example's batch of 3: the batch dimension really is dynamic
        x = normalize(data.test_images[:batch])
        with torch.inference_mode():
            expected = model(x).numpy()
        got = inference.run(sess, x)
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
    assert row["calls"] >= 5 and row["p99_ms"] >= row["p50_ms"] > 0
    assert row["images_per_s"] == pytest.approx(8 / (row["p50_ms"] / 1e3))
    assert inference.percentile([1, 2, 3, 4], 50) == 2.5 and inference.percentile([5], 99) == 5


def test_tensorrt_reason_on_cpu():
    assert "needs an NVIDIA GPU" in inference.tensorrt_unavailable("cpu")


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
            digit, probs = predict.predict(sess, save_png(array, tmp_path / f"{i}-{invert}.png", invert))
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
        digit, probs = predict.predict(sess, tmp_path / name)
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
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in record["rows"])
    assert "needs an NVIDIA GPU" in record["tensorrt"]


def test_inference_command_errors_are_one_line():
    done = subprocess.run([sys.executable, "-m", "accelbook.inference", "--device", "tpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
