"""Shared fixtures of the book's tests: the site, built once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bookfacts import ROOT, SITE


@pytest.fixture(scope="session")
def built_site() -> Path:
    """Build the site once per session (`bash scripts/book.sh build`: warnings are errors)."""
    done = subprocess.run(["bash", "scripts/book.sh", "build"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail("site build failed:\n" + done.stdout[-4000:] + done.stderr[-4000:], pytrace=False)
    return SITE
