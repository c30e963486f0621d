"""Paired repeats: a change timed against what it builds on, alternating, and a verdict.

Both ladders (chapter 6's and chapter 10's) and the chapters' own comparisons time a change
this way: `paired` runs the two sides in turn, `summary` keeps the rates, each pair's ratio,
their median and whether the change is outside the noise, and `text` prints them the same
way everywhere.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterable

from .loaders import endless
from .train import train_one_epoch

# Even numbers of pairs: in ABBA order half the pairs then run each side first, so a steady drift of the
# machine moves half the ratios up and half down and leaves their median alone. A change that does nothing
# reads "faster" 1 time in 2**n (n pairs, independent; "faster" or "slower" 2 in 2**n), and "within the
# noise" does not mean "no effect": a real gain smaller than the noise between pairs often reads so too.
REPEATS = 4        # pairs by default where a run takes seconds to minutes (a CPU): 1 in 16
REPEATS_CUDA = 6   # pairs by default on a GPU, where short runs are cheaper: 1 in 64
MIN_STEADY_S = 1.0  # each paired run times at least this long (a GPU runs a short window in milliseconds)


def default_repeats(device_type: str) -> int:
    """The number of pairs a ladder runs by default on a device of this type ("cuda", "cpu", "mps")."""
    return REPEATS_CUDA if device_type == "cuda" else REPEATS


def paired(before: Callable[[int], float], after: Callable[[int], float],
           repeats: int = REPEATS) -> tuple[list[float], list[float]]:
    """Rates (higher is faster) of `before(i)` and `after(i)` for pairs i = 0 .. repeats-1, in ABBA order.

    Pair 0 runs `before` first, pair 1 `after` first, and so on: with an even number of pairs a steady
    drift of the machine (a warming chip, a clock that decays) then favours neither side.
    """
    rates: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        sides = ((before, rates[0]), (after, rates[1]))
        for run, out in sides if i % 2 == 0 else reversed(sides):
            out.append(run(i))
    return rates


def training_run(model, optimizer, loss_fn, batches: Iterable, device, steps: int,
                 average=None) -> Callable[[int], float]:
    """A side for `paired`: each call trains `steps` more steps of `batches` (epoch after epoch) and
    returns steps per second; a first, untimed call here is the warm-up (memory, kernel choice)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    stream = endless(batches)

    def run(_: int = 0) -> float:
        start = time.perf_counter()
        # train_one_epoch ends with .item(), which waits for the device: the steps are done
        train_one_epoch(model, itertools.islice(stream, steps), optimizer, loss_fn, device,
                        average=average)
        return steps / (time.perf_counter() - start)

    run()
    return run


def verdict(ratios: list[float]) -> str:
    """Faster (every ratio after / before above 1), slower (every one below 1), within the noise (some of
    each), or not measured (fewer than two, or one not finite)."""
    finite = [r for r in ratios if r == r and abs(r) != float("inf")]
    if len(finite) < 2 or len(finite) < len(ratios):
        return "not measured"
    if min(finite) > 1:
        return "faster"
    if max(finite) < 1:
        return "slower"
    return "within the noise"


def summary(before: list[float], after: list[float]) -> dict:
    """Paired rates as a record's field: both lists, each pair's ratio, their median (None where the
    verdict is "not measured"), the verdict and the order."""
    ratios = [a / b if b else float("nan") for a, b in zip(after, before, strict=True)]
    said = verdict(ratios)
    if said == "not measured":  # valid JSON: no NaN or infinity in a record
        ratios = [r if r == r and abs(r) != float("inf") else None for r in ratios]
    return {"before": before, "after": after, "ratios": ratios,
            "median": None if said == "not measured" else statistics.median(ratios), "verdict": said,
            "order": "ABBA"}


def text(repeats: dict, page: bool = False) -> str:
    """'1.05x (0.962-1.091 over 4 pairs): within the noise' for a terminal, or for a page (`page`)
    '1.05× (0.962–1.091, 4 pairs)', from a `summary`; "not measured" where it has no median."""
    r = repeats["ratios"]
    if repeats["median"] is None:
        return "not measured"
    if page:
        return f"{repeats['median']:.2f}× ({min(r):.3f}–{max(r):.3f}, {len(r)} pairs)"
    return f"{repeats['median']:.2f}x ({min(r):.3f}-{max(r):.3f} over {len(r)} pairs): {repeats['verdict']}"
