"""Settings read from the environment, and the two run profiles, in one place.

Every ACCELBOOK_* variable the package reads is named here (tests/test_config.py checks that none is spelled
elsewhere and that README.md's settings table lists each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

QUICK_ENV = "ACCELBOOK_QUICK"        # 1: the quick profile (CI, smoke runs)
DATA_ENV = "ACCELBOOK_DATA"          # the dataset root (MNIST/raw/, tinyshakespeare/)
DEVICE_ENV = "ACCELBOOK_DEVICE"      # the device chapters and commands use when none is asked for
PROGRESS_ENV = "ACCELBOOK_PROGRESS"  # 0: no progress bars (committed runs)
RESULTS_ENV = "ACCELBOOK_RESULTS"    # the folder of benchmark records (default: the checkout's results/)
ENV_NAMES = (QUICK_ENV, DATA_ENV, DEVICE_ENV, PROGRESS_ENV, RESULTS_ENV)


@dataclass(frozen=True)
class Profile:
    """How much a command's run does: `images` training images (None: all) and a share of each recipe's epochs."""

    name: str
    images: int | None
    epochs_scale: float


FULL = Profile("full", None, 1.0)
QUICK = Profile("quick", 4000, 0.1)  # a smoke run: 4,000 images and a tenth of the epochs


def profile(asked_quick: bool = False) -> Profile:
    """QUICK when a command's --quick asks for it or ACCELBOOK_QUICK is on, else FULL."""
    return QUICK if asked_quick or quick() else FULL


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
