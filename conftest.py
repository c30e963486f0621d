"""nbval runs each notebook as a reader runs it on Colab, so one execution serves both checks.

nbval would start each notebook's kernel in notebooks/ of this clone, where the package is installed in
editable mode: code there can reach results/, ../data or src/ by paths that a Colab reader does not
have. Here the kernel starts instead in an empty temporary folder and imports a copy of the package
from outside the repository, as a non-editable install would, so nothing is found by walking up from
the working folder or from the package. What the package reads from outside comes the documented way:
the committed records through $ACCELBOOK_RESULTS (so nbval compares the tables that were committed)
and MNIST through $ACCELBOOK_DATA (default here: data/ of this clone, git-ignored, rather than one
download per notebook). ACCELBOOK_NBVAL_IN_REPO=1 gives nbval's own behaviour back.

`pytest --nbval` runs the chapters in the quick profile (ACCELBOOK_QUICK=1, the profile CI validates)
unless ACCELBOOK_QUICK is set: ACCELBOOK_QUICK=0 runs the full profile.
tests/test_notebooks_standalone.py checks that this is in force.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from accelbook.config import QUICK_ENV

ROOT = Path(__file__).resolve().parent


def colab_like_env(package_parent: Path) -> dict[str, str]:
    """The kernel's environment: this one, with only the package copy on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(package_parent)
    env.setdefault("ACCELBOOK_DATA", str(ROOT / "data"))
    if (ROOT / "results").is_dir():
        env.setdefault("ACCELBOOK_RESULTS", str(ROOT / "results"))
    return env


def nbval_requested(config) -> bool:
    """True when this pytest run executes notebooks (--nbval or --nbval-lax)."""
    return bool(config.getoption("nbval", default=False) or config.getoption("nbval_lax", default=False))


def nbval_defaults(config) -> None:
    """nbval's options for this book: the current environment's kernel and tests/nbval_sanitize.cfg."""
    option = config.option
    if not option.nbval_kernel_name:
        option.nbval_current_env = True
    if option.nbval_sanitize_with is None and not option.sanitize_with:
        option.nbval_sanitize_with = str(ROOT / "tests" / "nbval_sanitize.cfg")


def pytest_configure(config):
    if config.pluginmanager.hasplugin("nbval"):
        nbval_defaults(config)
    # Plain `pytest --nbval notebooks/` runs the quick profile, the one CI validates (minutes, not hours);
    # ACCELBOOK_QUICK=0 asks for the full profile. Set before any kernel starts, so every kernel inherits it.
    if nbval_requested(config):
        os.environ.setdefault(QUICK_ENV, "1")
    if os.environ.get("ACCELBOOK_NBVAL_IN_REPO") == "1" or not config.pluginmanager.hasplugin("nbval"):
        return
    import nbval.kernel
    import nbval.plugin

    base = Path(tempfile.mkdtemp(prefix="accelbook-colab-"))
    config.add_cleanup(lambda: shutil.rmtree(base, ignore_errors=True))
    site = base / "site-packages"
    shutil.copytree(ROOT / "src" / "accelbook", site / "accelbook", ignore=shutil.ignore_patterns("__pycache__"))
    env = colab_like_env(site)

    class ColabLikeKernel(nbval.kernel.RunningKernel):
        """nbval's kernel, started in an empty folder with the copied package (see the module's docstring)."""

        package_parent = site
        environment = env

        def __init__(self, kernel_name, cwd=None, startup_timeout=60):
            workdir = tempfile.mkdtemp(prefix="notebook-", dir=base)
            self.km, self.kc = nbval.kernel.start_new_kernel(
                startup_timeout=startup_timeout, kernel_name=kernel_name,
                stderr=open(os.devnull, "w"), cwd=workdir, env=env)
            self._ensure_iopub_up()

    nbval.plugin.RunningKernel = ColabLikeKernel
