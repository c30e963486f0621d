"""Seeding, as an explicit call (importing accelbook changes no global state)."""

from __future__ import annotations

import random

import torch


def set_seed(seed: int = 0) -> None:
    """Seed Python, PyTorch (CPU and every CUDA device) and NumPy when present."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for the package itself
        return
    np.random.seed(seed % 2**32)
