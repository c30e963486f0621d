"""Paired repeats: a change timed against what it builds on, alternating, and a verdict.

Both ladders (chapter 6's and chapter 10's) and the chapters' own comparisons time a change
this way: `paired` runs the two sides in turn, `summary` keeps the rates, each pair's ratio,
their median and whether the change is outside the noise, and `text` prints them the same
way everywhere. A chapter times training steps with `TrainingRun` sides (`recipe_run` makes the
book's recipe) and `paired_training`, which gives both sides one step count, enough for
MIN_STEADY_S a run.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .config import quick
from .loaders import endless
from .models import ConvNet
from .seed import set_seed
from .train import train_one_epoch, weight_average

# Even numbers of pairs: in ABBA order half the pairs then run each side first, so a steady drift of the
# machine moves half the ratios up and half down and leaves their median alone. A change that does nothing
# reads "faster" 1 time in 2**n (n pairs, independent; "faster" or "slower" 2 in 2**n), and "within the
# noise" does not mean "no effect": a real gain smaller than the noise between pairs often reads so too.
REPEATS = 4        # pairs by default where a run takes seconds to minutes (a CPU): 1 in 16
REPEATS_CUDA = 6   # pairs by default on a GPU, where short runs are cheaper: 1 in 64
MIN_STEADY_S = 1.0  # each paired run times at least this long (a GPU runs a short window in milliseconds)
MAX_LENGTHENINGS = 3  # paired_training's untimed calls at most, each at a longer step count


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


class TrainingRun:
    """A side for `paired`: each call trains `steps` more steps of `batches` (epoch after epoch) and returns
    steps per second. Making one runs a first, untimed call: the warm-up (memory, kernel choice)."""

    def __init__(self, model, optimizer, loss_fn, batches: Iterable, device, steps: int, average=None):
        if steps < 1:
            raise ValueError(f"steps must be at least 1, not {steps}")
        self.model, self.optimizer, self.loss_fn, self.device = model, optimizer, loss_fn, device
        self.steps, self.average, self.trained, self.calls = steps, average, 0, 0
        self.stream = endless(batches)
        self.rate = self()  # the warm-up; `rate` is always the latest call's steps per second

    def __call__(self, _: int = 0) -> float:
        """Train `steps` more steps; return steps per second."""
        start = time.perf_counter()
        # train_one_epoch ends with .item(), which waits for the device: the steps are done
        train_one_epoch(self.model, itertools.islice(self.stream, self.steps), self.optimizer,
                        self.loss_fn, self.device, average=self.average)
        self.rate = self.steps / max(time.perf_counter() - start, 1e-9)
        self.trained += self.steps
        self.calls += 1
        return self.rate


def recipe_run(device, batches: Iterable | None, steps: int, averaged: bool = False, seed: int = 0,
               feed_from_model: Callable | None = None, **model_kwargs) -> TrainingRun:
    """A `TrainingRun` of the book's recipe from `seed`: ConvNet(**model_kwargs), Adam at 1e-3, cross-entropy
    loss (and a weight average when `averaged`), fed `batches` or, instead, `feed_from_model(model)`."""
    if (batches is None) == (feed_from_model is None):
        raise ValueError("give recipe_run either batches or feed_from_model, not both or neither")
    set_seed(seed)
    model = ConvNet(**model_kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    feed = batches if feed_from_model is None else feed_from_model(model)
    average = weight_average(model) if averaged else None
    return TrainingRun(model, optimizer, nn.CrossEntropyLoss(), feed, device, steps, average)


def paired_training(before: TrainingRun, after: TrainingRun, repeats: int = REPEATS,
                    min_seconds: float | None = None) -> tuple[list[float], list[float]]:
    """`paired` for two training runs at one step count, raised until each run lasts about `min_seconds`
    (default MIN_STEADY_S; a tenth of it in the quick profile, a smoke run).

    Both sides always train the same steps (two runs from one seed stay comparable): the count grows for
    both, and each untimed call that measures a steady rate runs on both."""
    if before.steps != after.steps:
        raise ValueError(f"the two runs must start at one step count, not {before.steps} and {after.steps}")
    if min_seconds is None:
        min_seconds = MIN_STEADY_S / 10 if quick() else MIN_STEADY_S
    sides = (before, after)
    for _ in range(MAX_LENGTHENINGS):
        if not needs_steady_call(sides, min_seconds):
            break
        steps = lengthened(before.steps, max(side.rate for side in sides), min_seconds)
        for side in sides:
            side.steps = steps
            side()  # untimed: a steady rate at the new count
    return paired(before, after, repeats)


def needs_steady_call(sides, min_seconds: float) -> bool:
    """True when a side's latest call lasted under `min_seconds`, or when, on an accelerator, only its warm-up
    has run (`calls == 1`): that says little about its steady rate (lazy loading, autotuning); on a CPU a long
    warm-up is steady enough."""
    return any(side.steps / side.rate < min_seconds
               or (side.calls == 1 and torch.device(side.device).type != "cpu") for side in sides)


def lengthened(steps: int, rate: float, min_seconds: float) -> int:
    """The step count that lasts about 1.1 x `min_seconds` at `rate` steps/s, and never fewer than `steps`."""
    return max(steps, math.ceil(1.1 * min_seconds * min(rate, 1e9)))


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
