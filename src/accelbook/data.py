"""The book's data sets from one dataset root (MNIST; Tiny Shakespeare for chapter 10), with errors a reader can act on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .cli import UserError
from .config import DATA_ENV, data_root

# The four uncompressed IDX files torchvision reads from <root>/MNIST/raw, with the MD5 of each.
RAW_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel statistics, computed in chapter 3


class DatasetNotFoundError(FileNotFoundError, UserError):
    """MNIST is not under the dataset root and could not be downloaded."""


class CorruptDatasetError(RuntimeError, UserError):
    """An MNIST file is truncated or does not match its known checksum."""


def raw_folder(root: str | Path | None = None) -> Path:
    """The folder torchvision reads MNIST's IDX files from: <root>/MNIST/raw."""
    return Path(root if root is not None else data_root()).expanduser() / "MNIST" / "raw"


def _idx_expected_size(path: Path) -> int:
    """Size in bytes that an IDX file's own header promises (uint8 data only)."""
    with open(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] != 0x08:
            raise CorruptDatasetError(f"{path.name} is not an IDX file of bytes (bad magic number {header!r})")
        dims = [int.from_bytes(f.read(4), "big") for _ in range(header[3])]
    count = 1
    for d in dims:
        count *= d
    return 4 + 4 * len(dims) + count


def verify_mnist(root: str | Path | None = None, checksum: bool = True) -> Path:
    """Check that the four IDX files exist, are whole, and (optionally) match their MD5; return the folder."""
    folder = raw_folder(root)
    missing = [name for name in RAW_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"MNIST not found: {', '.join(missing)} missing in {folder}. Put the four uncompressed IDX files "
            f"there, or set {DATA_ENV} to the folder that holds MNIST/raw/ (or allow the download)."
        )
    for name, md5 in RAW_FILES.items():
        path = folder / name
        actual, expected = path.stat().st_size, _idx_expected_size(path)
        if actual != expected:
            raise CorruptDatasetError(
                f"{path} is {actual:,} bytes but its header promises {expected:,}: the file is truncated "
                f"or damaged. Delete it and fetch MNIST again."
            )
        if checksum and hashlib.md5(path.read_bytes()).hexdigest() != md5:
            raise CorruptDatasetError(f"{path} does not match MNIST's MD5 {md5}: delete it and fetch MNIST again.")
    return folder


def gunzip_raw(root: str | Path | None = None) -> list[str]:
    """Decompress each <root>/MNIST/raw/<file>.gz whose IDX file is missing (MNIST's own mirrors ship .gz)."""
    import gzip
    import shutil

    folder, written = raw_folder(root), []
    for name in RAW_FILES:
        packed = folder / f"{name}.gz"
        if packed.is_file() and not (folder / name).is_file():
            with gzip.open(packed, "rb") as src, open(folder / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(name)
    return written


def mnist_transform():
    """ToTensor then Normalize with MNIST's mean and std: the usual torchvision pipeline."""
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])


@contextmanager
def download_lock(folder: Path) -> Iterator[None]:
    """Hold a lock file in `folder`, so that two processes (test workers, notebooks) never download at once."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / ".download.lock"):
        yield


def mnist(train: bool = True, transform=None, root: str | Path | None = None, download: bool = True) -> Dataset:
    """torchvision's MNIST from the dataset root, downloading only when the files are absent."""
    from torchvision.datasets import MNIST

    root = Path(root if root is not None else data_root()).expanduser()
    try:
        verify_mnist(root)
    except DatasetNotFoundError:
        if not download:
            raise
        with download_lock(root):
            try:
                verify_mnist(root)  # another process fetched it while this one waited
            except DatasetNotFoundError:
                try:
                    MNIST(root, train=train, download=True)
                except Exception as err:  # offline, proxy, mirror down: one message, not a traceback per mirror
                    raise DatasetNotFoundError(
                        f"MNIST is not in {raw_folder(root)} and downloading it failed ({err}). Without internet, "
                        f"copy the four IDX files there, or set {DATA_ENV} to the folder that holds MNIST/raw/."
                    ) from None
        verify_mnist(root)
    return MNIST(root, train=train, transform=transform, download=False)


def mnist_tensors(train: bool = True, root: str | Path | None = None,
                  download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as one uint8 image tensor (N, 28, 28) and one int64 label tensor (N,)."""
    ds = mnist(train=train, root=root, download=download)
    return ds.data, ds.targets


@dataclass
class Data:
    """MNIST once, in memory: uint8 images and labels, and chapter 4's split."""

    images: torch.Tensor
    labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor

    @classmethod
    def load(cls, limit: int | None = None) -> Data:
        """Read MNIST (all of it, or the first `limit` images of each split: a smoke run)."""
        from .loaders import train_val_split  # loaders imports this module

        images, labels = mnist_tensors(train=True)
        test_images, test_labels = mnist_tensors(train=False)
        train_idx, val_idx = train_val_split(len(labels), val_size=5000, seed=0)
        if limit is not None:
            train_idx, val_idx = train_idx[:limit], val_idx[:max(limit // 10, 1)]
            test_images, test_labels = test_images[:limit], test_labels[:limit]
        return cls(images, labels, test_images, test_labels, train_idx, val_idx)

    def all_index(self) -> torch.Tensor:
        """Every training image: the split's and the validation's together, in file order."""
        return torch.cat([self.train_idx, self.val_idx]).sort().values

    def train_index(self, which: str = "split") -> torch.Tensor:
        """The training images a recipe uses: the split's ("split") or all of them ("all")."""
        if which not in ("split", "all"):
            raise ValueError(f"unknown training images {which!r}: use split or all")
        return self.all_index() if which == "all" else self.train_idx


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28) to float (N, 1, 28, 28), normalized like the transforms."""
    x = images.float().div_(255)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.sub_(MEAN).div_(STD)


# Tiny Shakespeare (chapter 10): karpathy/char-rnn's data/tinyshakespeare/input.txt, which nanoGPT's
# shakespeare_char preparation downloads; found at <root>/tinyshakespeare/input.txt.
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def shakespeare_path(root: str | Path | None = None) -> Path:
    """Where the corpus lives under the dataset root: <root>/tinyshakespeare/input.txt."""
    return Path(root if root is not None else data_root()).expanduser() / "tinyshakespeare" / "input.txt"


def verify_shakespeare(path: Path) -> None:
    """Raise CorruptDatasetError unless the file's SHA-256 is Tiny Shakespeare's."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise CorruptDatasetError(
            f"{path} is not Tiny Shakespeare (SHA-256 {digest}, expected {SHAKESPEARE_SHA256}): delete it "
            f"and fetch the corpus again.")


def shakespeare(root: str | Path | None = None, download: bool = True) -> str:
    """Tiny Shakespeare's text from the dataset root, downloaded (and checked) only when absent."""
    path = shakespeare_path(root)
    if not path.is_file():
        if not download:
            raise DatasetNotFoundError(
                f"Tiny Shakespeare not found: {path} is missing. Put input.txt (SHA-256 {SHAKESPEARE_SHA256}) "
                f"there, or set {DATA_ENV} to the folder that holds tinyshakespeare/.")
        with download_lock(path.parent):
            if not path.is_file():  # another process may have fetched it while this one waited
                download_shakespeare(path)
    verify_shakespeare(path)
    return path.read_text(encoding="utf-8")


def download_shakespeare(path: Path) -> None:
    """Fetch the corpus to path, keeping it only if its SHA-256 matches; one message when offline."""
    import urllib.request

    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            body = response.read()
    except Exception as err:  # offline, proxy, server down
        raise DatasetNotFoundError(
            f"Tiny Shakespeare is not at {path} and downloading it failed ({err}). Without internet, copy "
            f"input.txt (SHA-256 {SHAKESPEARE_SHA256}) there, or set {DATA_ENV} to the folder that holds "
            f"tinyshakespeare/.") from None
    if hashlib.sha256(body).hexdigest() != SHAKESPEARE_SHA256:
        raise CorruptDatasetError(f"the download from {SHAKESPEARE_URL} does not match SHA-256 {SHAKESPEARE_SHA256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


class CharCodec:
    """Characters as tokens: the sorted distinct characters of a text, each an index."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """A string to an int64 tensor of token indices (an unknown character raises KeyError)."""
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, tokens) -> str:
        """Token indices back to the string."""
        return "".join(self.chars[int(t)] for t in tokens)


def split_tokens(tokens: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """The first train_fraction of the tokens and the rest, as nanoGPT's shakespeare_char splits them."""
    cut = int(len(tokens) * train_fraction)
    return tokens[:cut], tokens[cut:]


def token_batch(tokens: torch.Tensor, block_size: int, batch_size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows of block_size tokens and the same windows shifted by one (the targets)."""
    if len(tokens) <= block_size:
        raise ValueError(f"{len(tokens)} tokens cannot give a window of {block_size} and its next token")
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = tokens[starts[:, None] + offsets]
    return x, tokens[starts[:, None] + offsets + 1]
