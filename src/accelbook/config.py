"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

QUICK_ENV = "ACCELBOOK_QUICK"
DATA_ENV = "ACCELBOOK_DATA"
DEVICE_ENV = "ACCELBOOK_DEVICE"
PROGRESS_ENV = "ACCELBOOK_PROGRESS"


def quick() -> bool:
    """True when the quick profile (CI, smoke runs) is on: ACCELBOOK_QUICK=1."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def progress_bars() -> bool:
    """False when ACCELBOOK_PROGRESS=0: committed runs store no progress widgets (on for readers)."""
    return os.environ.get(PROGRESS_ENV, "").strip().lower() not in {"0", "false", "no", "off"}


def scaled(full: int, quick_value: int) -> int:
    """Return `quick_value` in the quick profile, else `full` (epochs, subset sizes)."""
    return quick_value if quick() else full


def data_root() -> Path:
    """The dataset root: $ACCELBOOK_DATA, else ./data (torchvision's usual layout)."""
    return Path(os.environ.get(DATA_ENV) or "data").expanduser()
