"""Read a digit from any image file with the exported model (chapter 8).

    python -m accelbook.predict digit.png [more.png ...] --model model.onnx

Each image is prepared the way MNIST's digits were: grayscale, white digit on black (inverted when the
background is light), cropped to the digit, scaled so its longer side is 20 pixels, placed in a 28 x 28
frame with its centre of mass at the centre, then normalised like the training images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .cli import OneLineParser
from .data import MEAN, STD

DEFAULT_MODEL = "mnist-convnet.onnx"
CENTRE = 14.0  # where MNIST's test digits have their mean centre of mass, row and column (chapter 8 measures it)


class PredictError(ValueError):
    """An image (or model) the predictor cannot use; the message says why, in one line."""


def load_gray(path: str | Path) -> np.ndarray:
    """The image at `path` as float grayscale in [0, 1], (H, W); PredictError if missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img = img.convert("RGBA") if img.mode in ("P", "LA", "PA") else img
            if img.mode == "RGBA":  # transparent pixels count as white paper
                img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise PredictError(f"{path}: not an image PIL can read ({type(err).__name__})") from None


def to_mnist(gray: np.ndarray, min_contrast: float = 0.1) -> np.ndarray:
    """A grayscale image (H, W) in [0, 1] as an MNIST-like (28, 28) digit: white on black, 20 px box, centred by mass."""
    from PIL import Image

    if gray.max() - gray.min() < min_contrast:
        raise PredictError("the image is blank: no digit to read (no pixel differs from the background)")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1.0 - gray if np.median(border) > 0.5 else gray.copy()  # dark digit on light paper: invert
    ink = (ink - ink.min()) / (ink.max() - ink.min())
    rows, cols = np.nonzero(ink > 0.2)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float32) / 255.0
    frame = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    return centre_by_mass(frame)


def centre_by_mass(frame: np.ndarray) -> np.ndarray:
    """Shift a (28, 28) image by whole pixels so its centre of mass lands on the centre, without wrapping."""
    total = frame.sum()
    ys, xs = np.indices(frame.shape)
    dy = int(round(CENTRE - (ys * frame).sum() / total))
    dx = int(round(CENTRE - (xs * frame).sum() / total))
    out = np.zeros_like(frame)
    src = frame[max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def prepare(path: str | Path) -> np.ndarray:
    """The image file at `path` as the model's input: float32 (1, 1, 28, 28), normalised like training."""
    try:
        digit = to_mnist(load_gray(path))
    except PredictError as err:
        raise PredictError(str(err) if str(err).startswith(f"{path}:") else f"{path}: {err}") from None
    return ((digit - MEAN) / STD).astype(np.float32)[None, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis (numerically stable)."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def load_model(path: str | Path):
    """An ONNX Runtime session for the exported model at `path`; PredictError if it is missing or unreadable."""
    from .inference import session

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"no model at {path}: export one with chapter 8 (accelbook.inference.export_onnx) "
                           f"or pass --model")
    try:
        return session(path)
    except Exception as err:  # onnxruntime raises its own exception types for a file that is not a model
        raise PredictError(f"{path}: not an ONNX model ONNX Runtime can load ({type(err).__name__})") from None


def predict(sess, path: str | Path) -> tuple[int, np.ndarray]:
    """The predicted digit and the ten probabilities for the image file at `path`."""
    from .inference import run

    probs = softmax(run(sess, prepare(path))[0])
    return int(probs.argmax()), probs


def parser() -> OneLineParser:
    """The command line of `python -m accelbook.predict`."""
    p = OneLineParser(prog="python -m accelbook.predict", description="Read handwritten digits from image files.")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...): one digit each, any size")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"the exported ONNX model (default: {DEFAULT_MODEL})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: print each image's digit and probabilities; one line on stderr and exit 2 on a bad input."""
    p = parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sess = load_model(args.model)
    except PredictError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    status = 0
    for image in args.images:
        try:
            digit, probs = predict(sess, image)
        except PredictError as err:
            print(f"{p.prog}: error: {err}", file=sys.stderr)
            status = 2
            continue
        shown = " ".join(f"{d}:{q:.2f}" for d, q in enumerate(probs))
        print(f"{image}: {digit} ({probs[digit]:.1%})  [{shown}]")
    return status


if __name__ == "__main__":
    sys.exit(main())
