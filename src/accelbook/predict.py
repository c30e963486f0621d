"""Read a digit from any image file with the exported model (chapter 8).

    python -m accelbook.predict digit.png [more.png ...] --model model.onnx

Each image is prepared the way MNIST's digits were: turned upright as its EXIF orientation says, grayscale,
white digit on black (inverted when the background is light), uneven lighting and ruled lines removed and the
background set to zero (Otsu's threshold), cropped to the digit, scaled so its longer side is 20 pixels,
placed in a 28 x 28 frame with its centre of mass at the centre, then normalized like the training images.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from .cli import OneLineParser, UserError, fail, prog, run
from .data import MEAN, STD

DEFAULT_MODEL = "mnist-convnet.onnx"
CENTRE = 14.0  # where MNIST's test digits have their mean centre of mass, row and column (chapter 8 measures it)
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (a 1 GB RGB image); larger images are refused
WORK_SIDE = 512  # photos are reduced to at most this many pixels a side before they are prepared


class PredictError(ValueError, UserError):
    """An image (or model) the predictor cannot use; the message says why, in one line."""


def load_gray(path: str | Path) -> np.ndarray:
    """The image at `path`, upright (EXIF), as float grayscale in [0, 1], (H, W), at most WORK_SIDE pixels a side."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # Pillow warns (on stderr) from MAX_PIXELS, raises from twice that
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            if img.width * img.height > MAX_PIXELS:  # also where Pillow's own limit is switched off (None)
                raise PredictError(f"{path}: image too large ({img.width:,} x {img.height:,} pixels; "
                                   f"the limit is {MAX_PIXELS:,})")
            img.draft("L", (WORK_SIDE, WORK_SIDE))  # JPEG: decode at a reduced size where it can
            img = ImageOps.exif_transpose(img)  # phones store pixels as the sensor saw them, plus a rotation tag
            img = img.convert("RGBA") if img.mode in ("P", "LA", "PA") else img
            if img.mode == "RGBA":  # transparent pixels count as white paper
                img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
            img = img.convert("L")
            img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
            return np.asarray(img, dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PredictError(f"{path}: image too large (more than {MAX_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise PredictError(f"{path}: not an image PIL can read ({type(err).__name__})") from None


def to_mnist(gray: np.ndarray, min_contrast: float = 0.1) -> np.ndarray:
    """A grayscale image (H, W) in [0, 1] as an MNIST-like (28, 28) digit: white on black, 20 px box, centred by mass."""
    from PIL import Image

    if gray.max() - gray.min() < min_contrast:
        raise PredictError("the image is blank: no digit to read (no pixel differs from the background)")
    ink, threshold = digit_ink(gray)
    if ink.max() < min_contrast:
        raise PredictError("the image is blank: no digit to read (nothing stands out from the paper)")
    rows, cols = np.nonzero(ink > threshold)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    ink = ink / ink.max()
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float32) / 255.0
    frame = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    return centre_by_mass(frame)


def digit_ink(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(ink, threshold): strokes bright on a zero background, and Otsu's threshold between strokes and paper.

    Dark ink on light paper is inverted first. Uneven lighting is removed by subtracting the background that a
    grey opening (strokes are narrower than its window) leaves; lines that cross the whole page (ruled paper)
    by subtracting each row's and column's 10th percentile (a digit fills less of a row than a ruled line).
    Below half the threshold is background, set to zero.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1.0 - gray if np.median(border) > 0.5 else gray
    ink = np.clip(ink - grey_opening(ink, max(3, min(ink.shape) // 4 | 1)), 0, None)
    ink = np.clip(ink - np.percentile(ink, 10, axis=1, keepdims=True), 0, None)  # a line lights 90 % of its row
    ink = np.clip(ink - np.percentile(ink, 10, axis=0, keepdims=True), 0, None)
    threshold = otsu(ink)
    return np.clip(ink - threshold / 2, 0, None), threshold / 2


def grey_opening(image: np.ndarray, window: int) -> np.ndarray:
    """Minimum then maximum over `window` x `window` squares: removes bright features narrower than the window."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    pad = window // 2
    low = -F.max_pool2d(F.pad(-x, (pad,) * 4, mode="replicate"), window, stride=1)
    return F.max_pool2d(F.pad(low, (pad,) * 4, mode="replicate"), window, stride=1)[0, 0].numpy()


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (1979): the level that maximizes the between-class variance of `values`' histogram."""
    hist, edges = np.histogram(values, bins=bins)
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    between = (m0[-1] * w0 - m0) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return float(edges[1:][np.argmax(between[:-1])])


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
    """The image file at `path` as the model's input: float32 (1, 1, 28, 28), normalized like training."""
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
    """An ONNX Runtime session for a digit model at `path`; PredictError if missing, unreadable or not a digit model."""
    from .inference import session

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"no model at {path}: make one with `python -m accelbook.inference --export {path}` "
                           f"(it trains the book's fast recipe: about two minutes on a 2-core CPU) or pass --model")
    try:
        sess = session(path)
    except Exception as err:  # onnxruntime raises its own exception types for a file that is not a model
        raise PredictError(f"{path}: not an ONNX model ONNX Runtime can load ({type(err).__name__})") from None
    problem = interface_problem(sess)
    if problem:
        raise PredictError(f"{path}: {problem}")
    return sess


def interface_problem(sess) -> str | None:
    """Why the session is not a digit reader (one float input (N, 1, 28, 28), one output of 10 classes), or None."""
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        return f"the model has {len(inputs)} inputs and {len(outputs)} outputs; a digit model has one of each"
    shape, kind = inputs[0].shape, inputs[0].type
    fixed = [d if isinstance(d, int) else None for d in shape]
    fits = len(shape) == 4 and all(d is None or d == want for d, want in zip(fixed[1:], (1, 28, 28), strict=True))
    if kind != "tensor(float)" or not fits:
        return (f"its input {inputs[0].name!r} is {kind} of shape {shape}; a digit model takes float32 images "
                f"(N, 1, 28, 28)")
    classes = outputs[0].shape[-1] if outputs[0].shape else None
    if isinstance(classes, int) and classes != 10:
        return f"its output {outputs[0].name!r} has {classes} classes; a digit model has 10 classes"
    return None


def read_digit(sess, path: str | Path) -> tuple[int, np.ndarray]:
    """The predicted digit and the ten probabilities for the image file at `path`."""
    x = prepare(path)
    try:
        logits = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: x})[0]
    except Exception as err:  # a model whose interface fits can still fail inside (a fixed batch size, say)
        raise PredictError(f"{path}: the model failed on this image ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:120] if str(err) else 'no message'})") from None
    probs = softmax(logits[0])
    return int(probs.argmax()), probs


def build_parser() -> OneLineParser:
    """The command line of `python -m accelbook.predict`."""
    p = OneLineParser(prog=prog("predict"), description="Read handwritten digits from image files.")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...): one digit each, any size")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"the exported ONNX model (default: {DEFAULT_MODEL})")
    return p


def read_images(args) -> int:
    """Print each image's digit and probabilities; a bad image is one error line, the others still read."""
    sess = load_model(args.model)
    status = 0
    for image in args.images:
        try:
            digit, probs = read_digit(sess, image)
        except UserError as err:
            status = fail(prog("predict"), err)
            continue
        shown = " ".join(f"{d}:{q:.2f}" for d, q in enumerate(probs))
        print(f"{image}: {digit} ({probs[digit]:.1%})  [{shown}]")
    return status


def main(argv: list[str] | None = None) -> int:
    """Command line: read the digits; one line on stderr and exit status 2 for each bad input."""
    return run(build_parser(), read_images, argv)


if __name__ == "__main__":
    sys.exit(main())
