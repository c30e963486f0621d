"""Checkpoints that survive interruption, never run code when loaded (chapter 4), and can be verified (chapter 9)."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

from .cli import UserError


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to a temporary file beside `path`, then rename it over `path`.

    All or nothing where rename is atomic (POSIX, one file system): readers see the
    old file or the new one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        # Python documents os.replace as atomic where POSIX requires it (rename(2) on
        # one file system). On Windows it replaces the file but promises no atomicity.
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: leave no half-written file behind
        Path(tmp).unlink(missing_ok=True)
        raise


class ChecksumError(ValueError, UserError):
    """A file's SHA-256 differs from the one it was published with."""


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | Path, expected: str) -> Path:
    """Return `path` if its SHA-256 is `expected`; ChecksumError (one line, both digests) if not."""
    check_digest(Path(path).name, sha256(path), expected)
    return Path(path)


def check_digest(name: str, actual: str, expected: str) -> None:
    """ChecksumError (one line, both digests) unless `actual` is the `expected` SHA-256."""
    if actual != expected.strip().lower():
        raise ChecksumError(f"{name}: SHA-256 {actual[:16]}... does not match the published "
                            f"{expected.strip()[:16]}...: the file is damaged or not the one published; do not load it")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expected_sha256: str | None = None) -> dict:
    """Load with weights_only=True (tensors, numbers, strings, containers; pickled code is refused), verified if asked.

    With `expected_sha256` the file is read once: the bytes that are hashed are the bytes that are loaded.
    """
    if expected_sha256 is None:
        return torch.load(path, map_location=map_location, weights_only=True)
    data = Path(path).read_bytes()
    digest = hashlib.sha256()
    digest.update(data)
    check_digest(Path(path).name, digest.hexdigest(), expected_sha256)
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
