"""Every chapter notebook is stored lean, executed top to bottom, and leaks nothing about the machine."""

import getpass
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# An absolute path of two or more folders that is not part of a URL.
MACHINE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[A-Za-z0-9_.-]+/){2,}")


def _texts(value):
    """Every string inside an output, images excluded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not key.startswith("image/"):
                yield from _texts(item)


def _code_cells(path):
    """The non-empty code cells of a notebook."""
    cells = json.loads(path.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_in_order_from_one_run(path):
    counts = [c["execution_count"] for c in _code_cells(path)]
    assert None not in counts and counts == sorted(counts) and len(set(counts)) == len(counts), counts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_errors_only_where_expected(path):
    for i, cell in enumerate(_code_cells(path)):
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        if errors:
            assert "raises-exception" in cell["metadata"].get("tags", []), f"cell {i}: {errors[0]['ename']}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_paths_or_user_names(path):
    user = getpass.getuser()
    for i, cell in enumerate(_code_cells(path)):
        text = ANSI.sub("", "\n".join(_texts(cell["outputs"])))
        match = MACHINE_PATH.search(text)
        assert not match, f"cell {i} shows a machine path: {match.group(0)}"
        if user not in ("root", "jovyan", "runner"):
            assert user not in text, f"cell {i} shows the user name"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lean(path):
    assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size / 1e6:.2f} MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_reports_the_environment(path):
    setup = _code_cells(path)[0]
    assert "nbval-ignore-output" in setup["metadata"].get("tags", []) and "report(device)" in "".join(setup["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_progress_widgets_stored(path):
    # Committed runs set ACCELBOOK_PROGRESS=0: a stored tqdm bar is kilobytes of widget state and no
    # information. Widgets that are content (the explorer sliders) stay.
    state = json.loads(path.read_text())["metadata"].get("widgets", {})
    models = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {}).values()
    bars = sum(m.get("model_name") == "FloatProgressModel" for m in models)
    assert not bars, f"{bars} progress-bar widgets stored"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_saved_widget_view_has_its_state(path):
    """A widget view in an output renders on the site only with its model in the notebook's saved state."""
    nb = json.loads(path.read_text())
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in _code_cells(path) for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    missing = [v for v in views if v not in state.get("state", {})]
    assert not missing, f"widget views without saved state: {missing}"
