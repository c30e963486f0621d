"""accelbook.summary glues a chapter's results as MyST-NB's own glue does, without needing myst_nb."""

import nbformat
import pytest
from nbclient import NotebookClient

from accelbook.summary import results


def run(*sources: str) -> list:
    """Execute code cells in a fresh kernel of this Python; the executed cells."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb.cells


def test_glue_stores_what_myst_nb_stores():
    pytest.importorskip("myst_nb")
    mine, theirs = run('from accelbook.summary import glue\nglue("acc", "99.11%")',
                       'from myst_nb import glue\nglue("acc", "99.11%", display=False)')
    assert mine.outputs == theirs.outputs
    assert mine.outputs[0]["metadata"]["scrapbook"]["name"] == "acc"


def test_results_prints_and_glues_each_value():
    (cell,) = run('from accelbook.summary import results\nresults({"test-accuracy": "99.11%", "epoch": 3})')
    printed = "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream")
    assert printed.splitlines() == ["test-accuracy  99.11%", "epoch          3"]
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"] for o in cell.outputs if o["output_type"] == "display_data"}
    assert glued == {"test-accuracy": {"application/papermill.record/text/plain": "'99.11%'"},
                     "epoch": {"application/papermill.record/text/plain": "'3'"}}


def test_results_needs_values():
    with pytest.raises(ValueError, match="at least one"):
        results({})


def test_a_long_value_wraps_within_the_books_width_and_is_glued_whole():
    long = "; ".join(f"rung {i} (within the noise, 1.07x (0.987-1.071, 3 pairs))" for i in range(3))
    (cell,) = run(f'from accelbook.summary import results\nresults({{"kept": {long!r}, "n": 3}})')
    printed = "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream").splitlines()
    assert len(printed) > 2 and max(len(line) for line in printed) <= 88 and printed[-1] == "n     3"
    assert all(line.startswith("      ") for line in printed[1:-1])  # under the value's start
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"] for o in cell.outputs if o["output_type"] == "display_data"}
    assert glued["kept"] == {"application/papermill.record/text/plain": repr(long)}
