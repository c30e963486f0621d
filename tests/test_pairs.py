"""Paired repeats (issue 25, section 3): ABBA order, the verdict, one text for the terminal and the page."""

from __future__ import annotations

import pytest

from accelbook import pairs


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
    import json

    summary = pairs.summary([100.0, 0.0], [120.0, 110.0])
    assert summary["verdict"] == "not measured" and summary["median"] is None
    assert pairs.text(summary) == pairs.text(summary, page=True) == "not measured"
    json.dumps(summary, allow_nan=False)
