"""A chapter's header: its "Open in Colab" badge, the launch buttons and the Colab install line all
derive from the one repository URL in _config.yml, and its setup cell shows which torch, device and
date produced the stored outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from bookfacts import ROOT, book_config, colab_url, toc_files

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/[^\s)\"'>]+")


def read(path: Path):
    return nbformat.read(path, as_version=4)


def first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def test_the_repository_url_and_launch_buttons():
    cfg = book_config()
    url = cfg["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    assert cfg["repository"].get("branch"), "repository.branch is what the badges point at"
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["html"]["use_repository_button"] is True
    assert colab_url("notebooks/x.ipynb") == (
        f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}"
        f"/blob/{cfg['repository']['branch']}/notebooks/x.ipynb")


def test_every_chapter_notebook_is_in_the_toc():
    toc = set(toc_files())
    missing = [p.stem for p in NOTEBOOKS if f"notebooks/{p.stem}" not in toc]
    assert not missing, f"notebooks missing from _toc.yml: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_badge_points_at_its_own_notebook(path):
    nb = read(path)
    own = colab_url(path.relative_to(ROOT).as_posix())
    header = next(c for c in nb.cells if c.cell_type == "markdown")
    assert f"[Open in Colab]({own})" in header.source, f"the first markdown cell needs [Open in Colab]({own})"
    # Any other Colab link in the notebook also points at this notebook (no copy-paste from another).
    others = {u for c in nb.cells if c.cell_type == "markdown" for u in COLAB_LINK.findall(c.source)}
    assert others == {own}, others


# The Colab install cell (its address and its one-sentence failure): tests/test_chapter_facts.py.


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_say_which_torch_device_and_date(path):
    setup = first_code_cell(read(path))
    assert "report(" in setup.source, "the setup cell prints accelbook.device.report(device)"
    text = "".join(o.get("text", "") for o in setup.get("outputs", []) if o.get("output_type") == "stream")
    for key, value in (("device", r"\S+"), ("device_name", r"\S.*"), ("torch", r"\d+\.\d+\S*"),
                       ("date", r"\d{4}-\d{2}-\d{2}")):
        assert re.search(rf"^\s*{key}: {value}$", text, re.M), (
            f"the stored output of the setup cell lacks '{key}: …' (commit the notebook executed)")
