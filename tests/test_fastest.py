"""The fastest-path page is what the committed records render, and its rows say what the records hold."""

import copy
import json

import pytest

from accelbook import fastest
from bookfacts import ROOT

RECORD = sorted((ROOT / "results").glob("ladder-cpu-*.json"))[0]  # the oldest: the record FASTEST came from


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


def test_paired_repeats_show_their_range_and_verdict(tmp_path):
    rec = copy.deepcopy(record())
    fused = next(s for s in rec["rungs"] if s["rung"] == "fused Adam")
    fused.update(kept=False, repeats={"ratios": [1.26, 0.98, 1.09], "median": 1.09, "verdict": "within the noise"})
    row = next(r for r in fastest.rows(rec) if r["rung"] == "fused Adam")
    assert fastest.gain_text(row) == "1.09× (0.980–1.260, 3 pairs)"
    assert fastest.verdict(row) == "not kept (within the noise)"
    del rec["file"]
    (tmp_path / "README.md").write_text("accelbook.record/1")
    (tmp_path / RECORD.name).write_text(json.dumps(rec))
    page = fastest.page(tmp_path)
    assert "1.09× (0.980–1.260, 3 pairs) | not kept (within the noise)" in page and "paired" in page


def test_the_page_shows_the_newest_record_of_each_device(tmp_path):
    old, new = copy.deepcopy(record()), copy.deepcopy(record())
    new["provenance"]["datetime_utc"] = "2099-01-01T00:00:00+00:00"
    new["rungs"][3]["steady_images_per_s"] = 123456.0
    (tmp_path / "README.md").write_text("accelbook.record/1")
    for name, rec in (("a.json", old), ("b.json", new)):
        del rec["file"]
        (tmp_path / name).write_text(json.dumps(rec))
    page = fastest.page(tmp_path)
    assert "123,456" in page and "record `b.json`" in page and "record `a.json`" not in page


def test_a_faster_rung_not_kept_says_it_fell_short_on_validation():
    rec = copy.deepcopy(record())
    sized = next(s for s in rec["rungs"] if s["rung"] == "right-sized model")
    sized["kept"] = False
    row = next(r for r in fastest.rows(rec) if r["rung"] == "right-sized model")
    assert row["wall_gain"] > 1 and fastest.verdict(row) == "not kept (below the validation bar)"
    compiled = next(r for r in fastest.rows(rec) if r["rung"] == "torch.compile")
    assert fastest.verdict(compiled) == "not kept (slower)"


def test_a_rung_faster_in_its_pairs_but_slower_in_its_run_says_both():
    row = {"skipped": None, "kept": False, "repeats": {"verdict": "faster"}, "wall_gain": 0.9, "runs": 1}
    assert fastest.verdict(row) == "not kept (faster in its pairs; its one full run was slower)"
    assert fastest.verdict(dict(row, repeats=None)) == "not kept (slower)"
    kept = dict(row, kept=True)  # the pairs decided, the one full run was slower: the page says both
    assert fastest.verdict(kept) == "kept (faster in every pair; its one full run was slower)"
    assert fastest.verdict(dict(kept, wall_gain=1.1)) == "kept"
    three = dict(kept, runs=3)  # a --seeds 3 record: its full runs are a mean
    assert fastest.verdict(three) == "kept (faster in every pair; the mean of its 3 full runs was slower)"
    # where the pairs decide, a rung faster in them and not kept missed the bar: its full run did not matter
    assert fastest.verdict(dict(row, wall_decides=False)) == "not kept (below the validation bar)"


def test_a_same_cost_rung_not_kept_says_it_was_not_more_accurate():
    rec = copy.deepcopy(record())
    last = next(s for s in rec["rungs"] if s["rung"] == "right-sized model")  # made a schedule change here
    last["changes"], last["kept"] = {"schedule": ["constant", "onecycle"], "lr": [0.001, 0.01]}, False
    last["wall_s"] *= 100  # the same steps, slower in its one run: the rule never weighed its time
    row = next(r for r in fastest.rows(rec) if r["rung"] == "right-sized model")
    assert row["wall_gain"] < 1 and fastest.verdict(row) == "not kept (not a fifth of a point more accurate on validation)"
    assert row["before"]["quality"] == fastest.quality(next(s for s in rec["rungs"] if s["rung"] == "fused Adam"))
    line = next(x for x in fastest.table(rec, fastest.LESS).splitlines() if x.startswith("| right-sized model"))
    assert "| same steps |" in line and f"{row['wall_gain']:.2f}×" not in line  # its wall ratio is drift


def test_a_record_over_seeds_shows_means_and_their_spread(tmp_path):
    """A `--seeds 3` record's rows are means: the tables say so, and accuracies carry their spread."""
    rec = copy.deepcopy(record())
    for s in rec["rungs"]:
        if s.get("wall_s"):
            s.update(seeds=3, val_accuracy_std=0.0004)
    del rec["file"]
    (tmp_path / RECORD.name).write_text(json.dumps(rec))
    page = fastest.page(tmp_path)
    assert page.count("(mean of 3 runs)") == 2 and "(one run)" not in page  # both tables' heads
    sized = next(s for s in rec["rungs"] if s["rung"] == "right-sized model")
    assert f"| {sized['val_accuracy']:.2%} ± 0.04 points |" in page
    assert "Training runs per rung: 3." in page and "their standard deviation." in page


def test_the_less_training_table_names_the_bar_its_rungs_were_held_to():
    """A reader sees "98.68% kept" beside the bar it cleared: the bar from the record's own rung 0."""
    from accelbook.ladder import bar

    rec = copy.deepcopy(record())
    rec["rungs"][0]["val_accuracy"] = 0.9871  # rung 0 below the target: the bar follows it
    less, same = fastest.table(rec, fastest.LESS), fastest.table(rec, fastest.SAME)
    assert f"validation bar {bar(0.9871):.2%}, set from rung 0's 98.71%" in less.splitlines()[0]
    assert "validation bar" not in same



def test_a_record_that_trained_the_rung_the_same_way_says_so_once():
    """Chapter 6's sentence on the record's bf16 rung: "the same" only for one recipe, seed and bar."""
    from accelbook.ladder import bar

    rec, rung = record(), "mixed precision"
    row = fastest.rung_row(rec, rung)
    assert row and not row["skipped"], "the record ran its mixed-precision rung"
    same = fastest.record_rung(rec, copy.deepcopy(rec), rung)
    assert same.startswith("The newest record trained the same recipe") and same.count(row["quality"]) == 1
    first = next(s for s in rec["rungs"] if s.get("wall_s"))
    differs = (f"In the newest record it reached {row['quality']} against that record's bar of "
               f"{bar(first['val_accuracy']):.2%}, and was {'kept' if row['kept'] else 'not kept'}.")
    other = copy.deepcopy(rec)
    other["recipes"][rung]["lr"] = 0.5  # another recipe: the record's own figures, with its bar
    assert fastest.record_rung(rec, other, rung) == differs
    elsewhere = copy.deepcopy(rec)
    next(s for s in elsewhere["rungs"] if s["rung"] == rung)["val_accuracy"] -= 0.001  # another result
    assert fastest.record_rung(rec, elsewhere, rung) == differs
    unnamed = copy.deepcopy(rec)
    del unnamed["recipes"]  # neither side names its recipe: nothing says it was the same
    assert fastest.record_rung(unnamed, unnamed, rung) == differs
    lower = copy.deepcopy(rec)
    next(s for s in lower["rungs"] if s.get("wall_s"))["val_accuracy"] = 0.95  # another bar
    assert fastest.record_rung(rec, lower, rung).startswith("In the newest record it reached")
    seeds = copy.deepcopy(rec)
    for s in seeds["rungs"]:
        s["seeds"] = 3  # a mean over seeds is never seed 0's figure
    assert ", trained 3 times," in fastest.record_rung(seeds, rec, rung)
    assert not fastest.record_rung(rec, seeds, rung).startswith("The newest record trained the same")
    skipped = next(r["rung"] for r in fastest.rows(rec) if r["skipped"])
    for absent in (skipped, "no such rung"):
        assert fastest.record_rung(rec, rec, absent) == (
            f"The newest record has no result for {absent} to set beside it.")
    assert fastest.record_rung(None, rec, rung) == "There is no record to compare."


def test_the_seed_noise_sentence_claims_only_what_the_record_holds():
    """No record, a one-seed record and a `--seeds 3` record each get their own sentence."""
    rec = record()
    assert fastest.seed_noise(None).startswith("There is no committed record")
    assert "trained each rung once" in fastest.seed_noise(rec)
    for s, std in zip(rec["rungs"][:3], [0.0004, 0.0010, 0.0006], strict=True):
        s.update(seeds=3, val_accuracy_std=std)
    noise = fastest.seed_noise(rec)
    assert "trained each rung 3 times (`--seeds 3`)" in noise
    assert "deviation of 0.06 points" in noise and "0.10 at most" in noise
