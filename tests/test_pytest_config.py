"""pytest's configuration: plain `pytest tests/...` works without nbval, and nbval's options apply when it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pytest_without_nbval_collects_unit_tests():
    """`pytest -p no:nbval tests/...` must not fail on nbval's options in the shared configuration."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:nbval", "--collect-only", "-q", "tests/test_losses.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "test_losses.py::" in run.stdout


def test_nbval_options_are_in_force(request):
    """With nbval loaded, notebooks run in this environment's kernel and outputs pass through the sanitizer."""
    if not request.config.pluginmanager.hasplugin("nbval"):
        pytest.skip("nbval is not loaded in this run")
    option = request.config.option
    assert option.nbval_current_env is True
    assert Path(option.nbval_sanitize_with).resolve() == ROOT / "tests" / "nbval_sanitize.cfg"
