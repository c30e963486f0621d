"""Checkpoints that survive interruption and never run code when loaded (chapter 4)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to a temporary file beside `path`, then rename it over `path`: all or nothing."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        # Python documents os.replace as atomic where POSIX requires it (rename(2) on one file system):
        # readers see the old file or the new one. On Windows it replaces the file but promises no atomicity.
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave the half-written file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with weights_only=True: tensors, numbers, strings and containers only; pickled code is refused."""
    return torch.load(path, map_location=map_location, weights_only=True)
