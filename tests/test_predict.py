"""The digit reader on hostile and real-world files: a decompression bomb, a model with another interface,
phone photos (EXIF rotation, uneven lighting) and pencil on lined paper, all synthesised here."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from accelbook import inference, predict
from accelbook.data import normalize


@pytest.fixture(scope="module")
def data(mnist_subset):
    """MNIST: the shared 12,000-image training subset and the first 200 test images."""
    return replace(mnist_subset, test_images=mnist_subset.test_images[:200],
                   test_labels=mnist_subset.test_labels[:200])


@pytest.fixture(scope="module")
def model_path(fast_model, data, tmp_path_factory):
    """The shared one-epoch model exported to ONNX."""
    folder = tmp_path_factory.mktemp("model")
    return inference.export_onnx(fast_model, folder / "model.onnx", normalize(data.test_images[:2]))


def run_cli(*args, cwd=None):
    """`python -m accelbook.predict ...` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "accelbook.predict", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def one_line_error(done, words: str) -> None:
    """The command failed the book's way: exit 2, one line on stderr naming the problem, no traceback."""
    assert done.returncode == 2, done
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def png_bomb(path, side: int = 20000) -> None:
    """A valid 1-bit PNG of side x side white pixels: ~50 KB on disk, 400 megapixels decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\xff" * (side // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20000, 10000])  # Pillow raises above 179 megapixels, only warns from 89.5
def test_decompression_bomb_is_one_line(model_path, tmp_path, side):
    bomb = tmp_path / "bomb.png"
    png_bomb(bomb, side)
    assert bomb.stat().st_size < 200_000
    one_line_error(run_cli(bomb, "--model", model_path), "too large")


def onnx_model(path, input_name: str, shape: list, classes: int = 10):
    """A valid ONNX model: input `input_name` of `shape` (first dim 'N'), flattened, times a matrix -> `classes`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod(shape[1:]))
    weight = numpy_helper.from_array(np.full((features, classes), 0.01, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", [input_name], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["scores"])],
        "other", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *shape[1:]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_model_with_another_interface_is_one_line(data, tmp_path):
    digit = tmp_path / "digit.png"
    Image.fromarray(data.test_images[0].numpy()).resize((112, 112)).save(digit)
    wrong = onnx_model(tmp_path / "rgb.onnx", "input", ["N", 3, 32, 32])
    one_line_error(run_cli(digit, "--model", wrong), "(N, 1, 28, 28)")
    named = onnx_model(tmp_path / "named.onnx", "pixels", ["N", 1, 28, 28])  # another name, the right shape
    done = run_cli(digit, "--model", named)
    assert done.returncode == 0 and done.stdout.startswith(f"{digit}: "), done
    twelve = onnx_model(tmp_path / "twelve.onnx", "images", ["N", 1, 28, 28], classes=12)
    one_line_error(run_cli(digit, "--model", twelve), "10 classes")


def paper_photo(digit: np.ndarray, size: int = 240, box: int = 110, seed: int = 0, lighting=None,
                lines: bool = False, ink: float = 0.85) -> np.ndarray:
    """A grayscale 'photograph' (uint8) of an MNIST digit drawn dark on white paper.

    `lighting` (size x size, 0-1) multiplies everything, as uneven light would; `lines` rules the paper every
    22 pixels; `ink` is how dark a full stroke is (pencil is lighter than a pen); Gaussian sensor noise.
    """
    rng = np.random.default_rng(seed)
    stroke = np.asarray(Image.fromarray(digit).resize((box, box), Image.BICUBIC), dtype=np.float32) / 255.0
    reflect = np.full((size, size), 0.9, dtype=np.float32)
    if lines:
        for y in range(11, size, 22):
            reflect[y:y + 2] = 0.6  # ruled lines, thinner than the strokes
    top = (size - box) // 2
    reflect[top:top + box, top:top + box] *= 1 - ink * np.clip(stroke, 0, 1)
    light = np.ones((size, size), dtype=np.float32) if lighting is None else lighting
    photo = reflect * light + rng.normal(0, 0.02, (size, size))
    return (np.clip(photo, 0, 1) * 255).astype(np.uint8)


def read(sess, array: np.ndarray, path, **save) -> int:
    """The digit the predictor reads from `array` saved at `path`."""
    Image.fromarray(array).save(path, **save)
    return predict.read_digit(sess, path)[0]


DIGITS = range(8)  # the first eight test images: 7 2 1 0 4 1 4 9


def test_exif_rotated_photo_is_read_upright(data, model_path, tmp_path):
    sess = predict.load_model(model_path)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: a viewer rotates the stored pixels 90 degrees clockwise to show them
    for i in DIGITS:
        upright = paper_photo(data.test_images[i].numpy(), seed=i)
        stored = np.asarray(Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90))  # as the phone stored it
        assert read(sess, stored, tmp_path / f"{i}.jpg", exif=exif, quality=90) == int(data.test_labels[i]), i


def test_unevenly_lit_photo(data, model_path, tmp_path):
    sess = predict.load_model(model_path)
    x = np.linspace(1.0, 0.4, 240, dtype=np.float32)
    shadow = np.tile(x, (240, 1)) * np.linspace(1.0, 0.85, 240, dtype=np.float32)[:, None]  # a shadow across the page
    for i in DIGITS:
        photo = paper_photo(data.test_images[i].numpy(), seed=i, lighting=shadow)
        assert read(sess, photo, tmp_path / f"{i}.png") == int(data.test_labels[i]), i


def test_pencil_on_lined_paper(data, model_path, tmp_path):
    sess = predict.load_model(model_path)
    for i in DIGITS:
        photo = paper_photo(data.test_images[i].numpy(), seed=i, lines=True, ink=0.5)
        assert read(sess, photo, tmp_path / f"{i}.png") == int(data.test_labels[i]), i


def test_background_is_zero_after_preparation(data, tmp_path):
    x = np.linspace(1.0, 0.4, 240, dtype=np.float32)
    photo = paper_photo(data.test_images[0].numpy(), lighting=np.tile(x, (240, 1)), lines=True, ink=0.6)
    Image.fromarray(photo).save(tmp_path / "p.png")
    prepared = predict.to_mnist(predict.load_gray(tmp_path / "p.png"))
    assert (prepared[:3] == 0).all() and (prepared[-3:] == 0).all(), "MNIST's frame is black: no grey block"
    assert (prepared[:, :3] == 0).all() and (prepared[:, -3:] == 0).all()
