"""Each chapter runs as on Colab: from an empty folder, with only the installed package.

On Colab the repository's relative paths (results/, ../data, the notebooks' neighbours) do not exist.
The test command's nbval run is that run: the root conftest.py starts each notebook's kernel in an
empty temporary folder, importing a copy of the package from outside the repository (as a
non-editable install would), in the quick profile. So every notebook's one execution under nbval shows
it runs there, at no extra cost. The tests here check that this is in force, and that no code cell
names a path that only a clone has.

ACCELBOOK_STANDALONE_FULL=1 also executes each notebook once more in full Colab conditions, without the
committed records ($ACCELBOOK_RESULTS unset): slow (as long again as nbval), so not part of CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ipykernel.kernelspec
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from bookfacts import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
# A path that exists only inside a clone of the repository: up from notebooks/, or one of its folders.
REPO_PATH = re.compile(r"""["'](?:\.\./|(?:\./)?(?:results|src|book|notebooks|tests|scripts)/)""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_paths_into_the_repository(path):
    """Code cells name no path that only a clone has (the package finds such files, or says they are absent)."""
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {i}: {m.group(0)}…" for i, c in enumerate(nb.cells) if c.cell_type == "code"
             for m in REPO_PATH.finditer(c.source)]
    assert not found, found


def colab_kernel_class(config):
    if not config.pluginmanager.hasplugin("nbval"):
        pytest.skip("nbval is not active (run with --nbval, as `bash scripts/book.sh test` does)")
    if os.environ.get("ACCELBOOK_NBVAL_IN_REPO") == "1":
        pytest.skip("ACCELBOOK_NBVAL_IN_REPO=1: nbval runs the notebooks in the repository")
    import nbval.plugin

    return nbval.plugin.RunningKernel


def test_nbval_kernels_start_as_on_colab(pytestconfig, tmp_path):
    kernel = colab_kernel_class(pytestconfig)
    assert kernel.__name__ == "ColabLikeKernel", "the root conftest.py did not take over nbval's kernels"
    env = kernel.environment
    assert env["PYTHONPATH"] == str(kernel.package_parent)
    done = subprocess.run(
        [sys.executable, "-c", "import accelbook, os; print(accelbook.__file__); print(os.listdir('.'))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    where, listing = done.stdout.splitlines()
    assert Path(where).is_relative_to(kernel.package_parent), where
    assert not Path(where).is_relative_to(ROOT), where
    assert listing == "[]"


class CurrentEnvKernels(KernelSpecManager):
    """The `python3` kernel of the Python running the tests (as nbval's --nbval-current-env)."""

    def get_kernel_spec(self, kernel_name):
        return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                      **ipykernel.kernelspec.get_kernel_dict())


@pytest.mark.skipif(os.environ.get("ACCELBOOK_STANDALONE_FULL") != "1",
                    reason="ACCELBOOK_STANDALONE_FULL=1 runs each notebook again without the records")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_without_the_repository(path, tmp_path):
    site, work = tmp_path / "site-packages", tmp_path / "colab"
    shutil.copytree(ROOT / "src" / "accelbook", site / "accelbook", ignore=shutil.ignore_patterns("__pycache__"))
    work.mkdir()
    shutil.copy(path, work / path.name)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "ACCELBOOK_RESULTS"}}
    env.update(PYTHONPATH=str(site), ACCELBOOK_QUICK="1")
    nb = nbformat.read(work / path.name, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvKernels())
    # Cells tagged `raises-exception` may raise (nbclient honours the tag); any other error fails.
    NotebookClient(nb, km=km, timeout=1200, allow_errors=False).execute(cwd=str(work), env=env)
