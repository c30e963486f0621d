"""Paired repeats (issue 25, section 3): ABBA order, the verdict, one text for the terminal and the page."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from accelbook import pairs
from bookfacts import ROOT, stored_glue


def test_pairs_alternate_which_side_runs_first():
    calls = []

    def side(name, rate):
        return lambda i: calls.append((i, name)) or rate

    before, after = pairs.paired(side("A", 100.0), side("B", 120.0), repeats=4)
    assert calls == [(0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B"), (3, "B"), (3, "A")]
    assert before == [100.0] * 4 and after == [120.0] * 4


def test_a_steady_drift_favours_neither_side():
    """A machine that slows by 2% a run: in ABBA order a null change reads faster in some pairs, slower in
    others; always running `before` first would call the same null change 'slower' in every pair."""
    clock = iter(range(100))

    def drifting(i):
        return 100.0 * 0.98 ** next(clock)

    before, after = pairs.paired(drifting, drifting, repeats=4)
    ratios = pairs.summary(before, after)["ratios"]
    assert pairs.verdict(ratios) == "within the noise"
    clock = iter(range(100))
    naive = [drifting(0) for _ in range(8)]
    assert pairs.verdict([b / a for a, b in zip(naive[::2], naive[1::2], strict=True)]) == "slower"


def test_the_verdict_needs_every_pair_on_one_side():
    assert pairs.verdict([1.2, 1.01, 1.3]) == "faster"
    assert pairs.verdict([0.5, 0.7, 0.99]) == "slower"
    assert pairs.verdict([1.26, 0.98, 1.09]) == "within the noise"  # fused Adam's kind of result
    assert pairs.verdict([1.2]) == pairs.verdict([1.2, float("nan")]) == "not measured"


def test_one_summary_printed_for_the_terminal_and_for_the_page():
    summary = pairs.summary([100.0, 110.0, 90.0], [120.0, 99.0, 99.0])
    assert summary["ratios"] == pytest.approx([1.2, 0.9, 1.1]) and summary["median"] == pytest.approx(1.1)
    assert summary["order"] == "ABBA"
    assert pairs.text(summary) == "1.10x (0.900-1.200 over 3 pairs): within the noise"
    assert pairs.text(summary, page=True) == "1.10× (0.900–1.200, 3 pairs)"


def test_a_gpu_runs_more_pairs_by_default_and_every_default_is_even():
    assert pairs.default_repeats("cuda") == 6 and pairs.default_repeats("cpu") == pairs.default_repeats("mps") == 4
    assert pairs.REPEATS % 2 == 0 and pairs.REPEATS_CUDA % 2 == 0  # ABBA: each side first half the time


def test_with_an_even_number_of_pairs_a_linear_drift_leaves_the_median_alone():
    """Odd counts run one side first once more: under a steady drift their median leans that way."""
    for n, neutral in ((4, True), (3, False)):
        clock = iter(range(100))
        drifting = lambda i, clock=clock: 100.0 * (1 - 0.02 * next(clock))  # noqa: E731
        ratios = pairs.summary(*pairs.paired(drifting, drifting, repeats=n))["ratios"]
        median = sorted(ratios)[len(ratios) // 2] if n % 2 else sum(sorted(ratios)[1:3]) / 2
        assert (abs(median - 1) < 0.005) == neutral, (n, ratios)


def test_a_pair_that_measured_nothing_reads_not_measured_and_stays_valid_json():
    summary = pairs.summary([100.0, 0.0], [120.0, 110.0])
    assert summary["verdict"] == "not measured" and summary["median"] is None
    assert pairs.text(summary) == pairs.text(summary, page=True) == "not measured"
    json.dumps(summary, allow_nan=False)


# The chapters' own comparisons that their prose interprets, by the name each glues: every one of them a
# paired result in the page's format (median, range, number of pairs), not one run of each side.
PAIRED_GLUE = {
    "04_training": ["bn-step", "relu6-step", "avg-step", "loader-workers", "loader-persistent"],
    "05_profiling": ["loader-paired"],
    "06_optimization": ["cl-paired", "fused-paired", "data-paired", "bf16-paired"],
    "07_scaling": ["ddp-speedup"],  # its threads row's two paired results are read in a sentence (below)
    "08_inference": ["int8-speedup"],
    "09_robustness": ["aug-step", "adv-cost"],
    "10_transformer": ["bf16-gain-record", "bf16-gain-live"],
}
PAGE_TEXT = re.compile(r"\d+\.\d\d× \(\d+\.\d{3}–\d+\.\d{3}, (\d+) pairs\)")


@pytest.mark.parametrize("stem", sorted(PAIRED_GLUE))
def test_the_chapters_timing_comparisons_are_paired(stem):
    glued = stored_glue(stem)
    for name in PAIRED_GLUE[stem]:
        found = PAGE_TEXT.fullmatch(glued.get(name, "(not glued)"))
        assert found, f"{stem}: {name} = {glued.get(name, '(not glued)')!r} is not a paired result"
        assert int(found[1]) >= 3, f"{stem}: {name} rests on fewer than 3 pairs"


def test_the_batch_sweep_shows_each_batch_with_its_range():
    # Chapter 5's prose reads whether throughput fell at large batches; it must rest on the repeats' range.
    nb = json.loads((ROOT / "notebooks" / "05_profiling.ipynb").read_text(encoding="utf-8"))
    sweep = next(c for c in nb["cells"] if c.get("id") == "7f66230f")
    printed = "".join("".join(o.get("text", "")) for o in sweep["outputs"] if o["output_type"] == "stream")
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert rows and all(re.fullmatch(r"[\d,]+-[\d,]+", row[3]) for row in rows), printed
    tail = stored_glue("05_profiling")["sweep-tail"]
    assert tail.startswith(("fell", "levelled off", "still rose")) and PAGE_TEXT.search(tail), tail


# Where the prose glues a paired result and, beside it, its verdict: the two must agree.
VERDICT_OF = {
    "04_training": [("bn-step", "bn-step-verdict"), ("relu6-step", "relu6-step-verdict"),
                    ("avg-step", "avg-step-verdict"), ("loader-workers", "loader-workers-verdict")],
    "09_robustness": [("aug-step", "aug-step-verdict")],
    "10_transformer": [("bf16-gain-live", "bf16-verdict-live")],
}
RANGE = re.compile(r"\((\d+\.\d{3})–(\d+\.\d{3}),")


def test_chapter7_threads_sentences_rest_on_pairs_and_agree_with_their_verdict():
    """On a CPU chapter 7 glues the threads row as whole sentences (a GPU has no such row): both of its rates
    are paired results, and the verdict it states is the one the range of the second gives."""
    glued = stored_glue("07_scaling")
    for name in ("threads-row", "threads-summary"):
        found = [int(m[1]) for m in PAGE_TEXT.finditer(glued[name])]
        assert len(found) == 2 and min(found) >= 3, (name, glued[name])
        low, high = map(float, RANGE.findall(glued[name])[1])
        expected = "faster" if low > 1 else "slower" if high < 1 else "within the noise"
        if min(abs(low - 1), abs(high - 1)) > 0.0005:  # the printed range is rounded to 3 places
            assert f"({expected})" in glued[name], (name, glued[name])


@pytest.mark.parametrize("stem", sorted(VERDICT_OF))
def test_glued_verdicts_agree_with_their_ranges(stem):
    glued = stored_glue(stem)
    for value, verdict in VERDICT_OF[stem]:
        low, high = map(float, RANGE.search(glued[value]).groups())
        expected = "faster" if low > 1 else "slower" if high < 1 else "within the noise"
        if min(abs(low - 1), abs(high - 1)) > 0.0005:  # the printed range is rounded to 3 places
            assert glued[verdict] == expected, (value, glued[value], glued[verdict])


def test_chapter4_reads_persistent_workers_by_their_pairs():
    """The sentence on `persistent_workers` opens with the verdict its pairs' range gives."""
    glued = stored_glue("04_training")
    low, high = map(float, RANGE.search(glued["loader-persistent"]).groups())
    expected = "faster" if low > 1 else "slower" if high < 1 else "within the noise"
    assert glued["loader-persistent-reading"].startswith(expected), glued["loader-persistent-reading"]


def _tiny_run(steps: int):
    """A seed-0 linear model on 3 fixed batches, wrapped by `TrainingRun`: (run, model)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    run = pairs.TrainingRun(model, optimizer, torch.nn.CrossEntropyLoss(), batches, "cpu", steps)
    return run, model


def test_a_training_run_warms_up_then_trains_its_steps_per_call_across_epochs():
    run, model = _tiny_run(steps=2)
    warmed = model.weight._version  # each optimizer step bumps the weight's version once
    assert run(0) > 0 and model.weight._version - warmed == 2  # two steps, not the 3-batch epoch
    run(1), run(2)  # 4 more steps over 3 batches: the stream goes on into the next epochs
    assert model.weight._version - warmed == 6 and run.trained == 8  # with the warm-up's 2


def test_two_training_runs_from_one_seed_end_equal_when_paired():
    (a, model_a), (b, model_b) = _tiny_run(steps=2), _tiny_run(steps=2)
    pairs.paired(a, b, repeats=2)
    assert all(torch.equal(x, y) for x, y in zip(model_a.parameters(), model_b.parameters(), strict=True))


def test_a_training_run_of_no_steps_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        _tiny_run(steps=0)


def test_paired_training_lengthens_both_sides_alike_when_one_was_short():
    """Only one warm-up ran short: both sides still get the untimed steady call and the same longer count,
    so two runs from one seed end bit-equal (chapter 4 compares their weights)."""
    (a, model_a), (b, model_b) = _tiny_run(steps=2), _tiny_run(steps=2)
    a.rate, b.rate = 2000.0, 1.0  # a's 2 steps "took" 1 ms, b's 2 s: only a is under min_seconds
    pairs.paired_training(a, b, repeats=2, min_seconds=0.05)
    assert a.steps == b.steps >= 110 and a.trained == b.trained  # 1.1 x 0.05 s x 2,000 steps/s at least
    assert all(torch.equal(x, y) for x, y in zip(model_a.parameters(), model_b.parameters(), strict=True))


def test_paired_training_leaves_long_enough_cpu_runs_alone():
    (a, _), (b, _) = _tiny_run(steps=2), _tiny_run(steps=2)
    pairs.paired_training(a, b, repeats=2, min_seconds=0.0)
    assert a.steps == b.steps == 2 and a.trained == b.trained == 2 * 3  # warm-up + 2 runs, no extra call


def test_paired_training_refuses_two_step_counts():
    (a, _), (b, _) = _tiny_run(steps=2), _tiny_run(steps=3)
    with pytest.raises(ValueError, match="one step count"):
        pairs.paired_training(a, b, repeats=2)


def test_a_steady_call_follows_a_short_run_or_an_accelerators_warm_up():
    side = lambda device, steps, rate, calls: SimpleNamespace(  # noqa: E731
        device=device, steps=steps, rate=rate, calls=calls)
    assert not pairs.needs_steady_call([side("cpu", 100, 30.0, 1)], 1.0)     # 3.3 s on a CPU
    assert pairs.needs_steady_call([side("cpu", 100, 300.0, 1)], 1.0)        # 0.33 s
    assert pairs.needs_steady_call([side("cuda", 100, 30.0, 1)], 1.0)        # a GPU's warm-up alone
    assert not pairs.needs_steady_call([side("cuda", 100, 30.0, 2)], 1.0)    # after its steady call


def test_a_training_run_counts_its_calls_from_the_warm_up():
    """`calls` tells the warm-up from a steady call, whatever the step counts were: an accelerator's run
    gets a steady call after its warm-up, and not after one, even when its steps equal the steps trained."""
    (run, _) = _tiny_run(steps=2)
    assert run.calls == 1
    run.device = "cuda"  # only the device's type is read
    assert pairs.needs_steady_call([run], 0.0)
    run.device = "cpu"
    run()
    run.device, run.steps = "cuda", run.trained
    assert run.calls == 2 and not pairs.needs_steady_call([run], 0.0)


def test_a_lengthened_run_lasts_a_tenth_more_than_asked_and_never_shrinks():
    assert pairs.lengthened(100, 1000.0, 1.0) == 1100
    assert pairs.lengthened(100, 10.0, 1.0) == 100
    assert pairs.lengthened(1, float("inf"), 1.0) == 1_100_000_000  # a zero-time call does not overflow


def test_paired_training_asks_a_second_unless_the_profile_is_quick(monkeypatch):
    """Full profile: runs of at least MIN_STEADY_S; the quick profile (a smoke run) a tenth of that."""
    asked = []
    monkeypatch.setattr(pairs, "lengthened", lambda steps, rate, seconds: asked.append(seconds) or steps)
    for quick in ("0", "1"):
        monkeypatch.setenv("ACCELBOOK_QUICK", quick)
        (a, _), (b, _) = _tiny_run(steps=1), _tiny_run(steps=1)
        a.rate = b.rate = 1e6  # "short": each asks for a longer count once per lengthening
        pairs.paired_training(a, b, repeats=2)
    assert set(asked) == {pairs.MIN_STEADY_S, pairs.MIN_STEADY_S / 10}, asked


def test_recipe_runs_from_one_seed_end_bit_equal_and_may_build_their_feed_from_the_model():
    """Two seed-0 recipe runs paired end equal; a feed made from the model (adversarial copies) gets it."""
    batches = [(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))) for _ in range(2)]
    seen = []
    a = pairs.recipe_run("cpu", batches, steps=1)
    b = pairs.recipe_run("cpu", None, steps=1,
                         feed_from_model=lambda model: seen.append(model) or batches)
    pairs.paired_training(a, b, repeats=2, min_seconds=0.0)
    assert seen == [b.model] and b.average is None
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="either batches or feed_from_model"):
        pairs.recipe_run("cpu", batches, steps=1, feed_from_model=lambda model: batches)
    with pytest.raises(ValueError, match="either batches or feed_from_model"):
        pairs.recipe_run("cpu", None, steps=1)
    averaged = pairs.recipe_run("cpu", batches, steps=1, averaged=True, batchnorm=True)
    assert averaged.average is not None and any(
        isinstance(m, torch.nn.BatchNorm2d) for m in averaged.model.modules()
    )
