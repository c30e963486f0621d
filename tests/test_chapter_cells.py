"""Functions that chapters define in their own cells, run on shaped inputs rather than on one stored run."""

import json
from pathlib import Path
from types import SimpleNamespace

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def _cell_source(stem: str, cell_id: str) -> str:
    """The source of a chapter's cell, by id ("" when the chapter has no such cell)."""
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return next(("".join(c["source"]) for c in nb["cells"] if c.get("id") == cell_id), "")


def _cell_function(stem: str, cell_id: str, name: str, scope: dict, end: str = "\nresults("):
    """Define `name` from the `def name` onwards of a chapter's cell (up to `end`), in `scope`, and
    return it."""
    source = _cell_source(stem, cell_id)
    assert f"def {name}(" in source, f"{stem}: cell {cell_id} no longer defines {name}()"
    definition = source[source.index(f"def {name}("):]
    assert end in definition, f"{stem}: cell {cell_id} has no {end.strip()!r} after {name}()"
    definition = definition[:definition.index(end)]
    exec(definition, scope)
    return scope[name]


def _batch256(rows: dict) -> dict:
    """Chapter 6's `batch256` glue, on sweep rows of (validation accuracy, wall seconds)."""
    batch_rows = {b: SimpleNamespace(val_accuracy=acc, wall_s=wall) for b, (acc, wall) in rows.items()}
    return _cell_function("06_optimization", "5c11c3f8", "batch256", {"batch_rows": batch_rows})()


def test_chapter6_compares_batch256s_time_only_with_runs_that_learned():
    """A batch that diverged (chance accuracy) and so finished first is not the one batch 256 is timed against."""
    glued = _batch256({64: (0.97, 5.0), 256: (0.96, 2.6), 512: (0.95, 2.3), 2048: (0.098, 1.1)})
    assert "batch 512" in glued["batch256-wall"] and "2048" not in glued["batch256-wall"]
    assert glued["batch256-acc"] == "1.00 points below batch 64's, the best"


def test_chapter6_says_when_batch256_was_the_quickest_that_learned():
    """Batch 256 is named the quickest when only a diverged run beat its time."""
    glued = _batch256({64: (0.97, 5.0), 256: (0.96, 2.6), 2048: (0.1, 1.1)})
    assert glued["batch256-wall"] == "the least time of the sweep's runs that learned"


def test_chapter6_says_when_batch256_itself_did_not_learn():
    """A diverged batch 256 is not timed against a run that learned, even when it was quicker."""
    glued = _batch256({64: (0.97, 5.0), 256: (0.1, 1.0), 512: (0.95, 2.3)})
    assert glued["batch256-wall"] == "1.00 s, but batch 256 itself did not learn"
    glued = _batch256({64: (0.1, 5.0), 256: (0.1, 2.0)})
    assert glued["batch256-wall"] == "2.00 s, but batch 256 itself did not learn"


def test_chapter6_breaks_a_tie_in_batch256s_favour():
    """A run exactly as quick as batch 256 is not named as the faster one."""
    glued = _batch256({128: (0.97, 2.6), 256: (0.96, 2.6)})
    assert glued["batch256-wall"] == "the least time of the sweep's runs that learned"


def test_chapter6_says_when_batch256_was_not_in_the_sweep():
    """The glue names the gap rather than failing when the sweep leaves batch 256 out."""
    glued = _batch256({64: (0.97, 5.0)})
    assert glued == {"batch256-acc": "n/a (batch 256 was not in the sweep)",
                     "batch256-wall": "n/a (batch 256 was not in the sweep)"}


def _average_gap(plain: float, averaged: float, said: str) -> str:
    """Chapter 4's words for the weight average's step time against the plain one's (ms, medians)."""
    return _cell_function("04_training", "f7074df1", "average_gap", {}, end="\nsteps = ")(plain, averaged, said)


def test_chapter4_calls_a_shorter_step_with_the_average_no_cost():
    """A median step quicker with the average, inside the noise, is not glued as a negative cost."""
    said = _average_gap(7.50, 7.23, "within the noise")
    assert said == "a median step 0.27 ms shorter with it: no cost this machine can resolve"
    assert "-" not in said and "cost here" not in said


def test_chapter4_names_a_cost_only_where_every_pair_was_slower():
    """The average's cost is named as such only on a "slower" verdict; a faster one is drift."""
    assert _average_gap(7.0, 7.4, "slower") == "a median step 0.40 ms longer with it: the average's cost here"
    assert _average_gap(7.0, 6.5, "faster").endswith("the machine's drift, not a gain")
    assert _average_gap(7.0, 7.4, "within the noise").startswith("a median step 0.40 ms longer")
    assert _average_gap(7.0, 7.0, "not measured") == "no cost measured"


def _operator_table(device_type: str, capsys) -> list[str]:
    """Chapter 5's profiler table, printed for one made-up operator as `device_type` reports it."""
    import torch

    event = SimpleNamespace(key="aten::conv2d", count=3, input_shapes=[[64, 1, 28, 28]],
                            self_cpu_time_total=1000.0, cpu_time_total=2000.0,
                            self_device_time_total=30000.0, device_time_total=40000.0)
    scope = {"device": torch.device(device_type)}
    _cell_function("05_profiling", "58030d10", "operator_table", scope, end="\noperator_table(")([event], 5)
    return capsys.readouterr().out.splitlines()


def test_chapter5_operator_table_pairs_device_self_time_with_device_total(capsys):
    """On CUDA both time columns are the device's (self, then total); on a CPU both are the CPU's."""
    assert _operator_table("cuda", capsys)[1].split()[1:4] == ["30.00", "40.00", "3"]
    assert _operator_table("cpu", capsys)[1].split()[1:4] == ["1.00", "2.00", "3"]


def _nproc(gpus: int) -> int:
    """Chapter 7's `NPROC` line, evaluated as a machine with `gpus` GPUs would."""
    source = _cell_source("07_scaling", "3fc31f1a")
    line = next((ln for ln in source.splitlines() if ln.startswith("NPROC = ")), None)
    assert line, "07_scaling: cell 3fc31f1a no longer sets NPROC"
    return eval(line.removeprefix("NPROC = "), {"GPUS": gpus})  # the chapter's own expression


def test_chapter7_launches_as_many_processes_as_its_global_batches_divide_among():
    """Any count of GPUs gives 2 to 8 processes (no more than the GPUs) that share batches of 128 and 64."""
    from accelbook import ddp

    for gpus in range(17):
        nproc = _nproc(gpus)
        assert 2 <= nproc <= 8 and (gpus < 2 or nproc <= gpus), (gpus, nproc)
        for global_batch in (128, 64):
            ddp.per_rank_batch(global_batch, nproc)  # refuses a batch the ranks cannot share evenly
