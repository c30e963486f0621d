"""The fastest-path page is what the committed records render, and its rows say what the records hold."""

import copy
import json

import pytest

from accelbook import fastest
from bookfacts import ROOT

RECORD = next((ROOT / "results").glob("ladder-cpu-*.json"))


def record() -> dict:
    return {**json.loads(RECORD.read_text()), "file": RECORD.name}


def test_the_committed_page_is_rendered_from_the_committed_records():
    page = (ROOT / "book" / "fastest_path.md").read_text(encoding="utf-8")
    assert page == fastest.page(ROOT / "results"), "run scripts/polish_chapters.py to rewrite book/fastest_path.md"


def test_each_gain_is_over_the_best_kept_recipe_before_it():
    rows = {r["rung"]: r for r in fastest.rows(record())}
    rungs = {s["rung"]: s for s in record()["rungs"]}
    compiled, fused = rows["torch.compile"], rungs["fused Adam"]
    assert compiled["gain"] == pytest.approx(rungs["torch.compile"]["steady_images_per_s"] / fused["steady_images_per_s"])
    # torch.compile was not kept, so the next rung is measured against fused Adam again
    sized = rows["right-sized model"]
    assert sized["wall_gain"] == pytest.approx(fused["wall_s"] / rungs["right-sized model"]["wall_s"])


def test_recipe_changes_are_less_training_and_the_rest_same_training():
    groups = {r["rung"]: r["group"] for r in fastest.rows(record())}
    assert groups["batch 256 + one-cycle"] == groups["right-sized model"] == fastest.LESS
    assert groups["channels_last"] == groups["cudnn.benchmark + TF32"] == fastest.SAME  # skipped: declared check


def test_a_changed_record_changes_the_page(tmp_path):
    rec = copy.deepcopy(record())
    rec["rungs"][3]["steady_images_per_s"] *= 2
    del rec["file"]
    (tmp_path / "README.md").write_text("accelbook.record/1")
    (tmp_path / RECORD.name).write_text(json.dumps(rec))
    page = fastest.page(tmp_path)
    assert f"{rec['rungs'][3]['steady_images_per_s']:,.0f}" in page and page != fastest.page(ROOT / "results")


def test_no_records_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ladder records"):
        fastest.page(tmp_path)
