"""Shared fixtures of the book's tests: the site, built once per session; an MNIST subset and a model trained once."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from bookfacts import ROOT, SITE


@pytest.fixture(scope="session")
def built_site() -> Path:
    """Build the site once per test run (`bash scripts/book.sh build`: warnings are errors).

    Under pytest-xdist every worker that needs the site asks for it: the first builds it under a lock, and
    the others wait, then find the run's marker and leave _build/ alone while other workers read it."""
    build = ROOT / "_build"
    build.mkdir(exist_ok=True)
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    marker = build / f".site-built-{run}" if run else None
    with FileLock(build / ".site-build.lock"):
        if marker is None or not marker.exists():
            for old in build.glob(".site-built-*"):  # earlier runs' markers
                old.unlink(missing_ok=True)
            done = subprocess.run(["bash", "scripts/book.sh", "build"], cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail("site build failed:\n" + done.stdout[-4000:] + done.stderr[-4000:], pytrace=False)
            if marker is not None:
                marker.touch()
    return SITE


@pytest.fixture(scope="session")
def mnist_subset():
    """MNIST (data.Data): a 12,000-image training subset and the first 2,000 test images."""
    from accelbook.data import Data

    full = Data.load()
    return replace(full, train_idx=full.train_idx[:12000], test_images=full.test_images[:2000],
                   test_labels=full.test_labels[:2000])


@pytest.fixture(scope="session")
def fast_model(mnist_subset):
    """The fast recipe trained one epoch on the subset from seed 0, in eval mode (chapter 8's tests share it)."""
    from accelbook.recipes import FAST, train_recipe

    torch.manual_seed(0)
    return train_recipe(replace(FAST, epochs=1.0), torch.device("cpu"), mnist_subset).model.eval()
