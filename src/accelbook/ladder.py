"""The optimization ladder: from the article's recipe to the book's fastest.

    python -m accelbook.ladder                # every rung; record in results/
    python -m accelbook.ladder --quick --out /tmp/l.json    # a smoke run
    python -m accelbook.ladder --rungs 0,1,2 --device cpu --seeds 3
    python -m accelbook.ladder --repeats 6    # six pairs per same-training rung
    python -m accelbook.ladder --precision fp16      # fp16 + GradScaler
    python -m accelbook.ladder --compare results/ladder-<gpu>-<date>.json
    python -m accelbook.ladder --task shakespeare    # chapter 10's GPT

Each rung applies one change to the best recipe so far and checks its first steps
against that recipe (the losses must agree as closely as the change allows). Then it
trains, and it is kept if it is faster and reaches one bar on the validation split:
a fifth of a point below the target or the article's recipe (rung 0), whichever is
lower. That bar is fixed for the whole ladder, so the fifths do not add up from rung
to rung. A rung that changes only the learning-rate schedule or Adam's settings runs
the same steps, so it is kept if it is more accurate than the recipe it builds on by
that fifth of a point. A rung that keeps the training the same (not a "recipe"
change) is also timed in pairs of short runs against the recipe it builds on, in
ABBA order (`accelbook.pairs`; --repeats pairs, default 4, on CUDA 6). The pairs
decide its speed: it is kept only if it was faster in every pair (a mixed result is
"within the noise"), whatever its one full run, made minutes apart from the run it
is compared with, says. A change with a one-time cost that the pairs' steady rates
leave out (torch.compile, CUDA graphs, cudnn.benchmark's autotuning) must be faster
in its full run too. The test accuracy is reported once, for the top of the ladder.
A rung that cannot run on the device is a row saying why. Every rung starts from
PyTorch's default float32 settings (cuDNN may use TF32 for convolutions, matmuls
stay full precision) unless the rung changes them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .cli import InvalidArgument, OneLineParser, number, prog, run
from .config import QUICK, QUICK_ENV, profile
from .data import Data
from .formats import bf16_supported
from .lm import RUNGS as LM_RUNGS
from .pairs import MIN_STEADY_S, REPEATS, default_repeats, paired, summary, text
from .recipes import (
    Recipe,
    Result,
    Rung,
    adam_implementation,
    backend_settings,
    check_change,
    json_fields,
    tf32_convolutions,
    train_recipe,
    unsupported,
)

ARTICLE = Recipe()  # rung 0: chapter 4's recipe (DataLoader over PIL images, batch 64, Adam 1e-3, 10 epochs, fp32)
TARGET = 0.99       # accuracy the book's fastest recipe must reach (test, mean over 5 seeds); rungs: validation
SLACK = 0.002       # a faster rung may fall this far below min(TARGET, rung 0) on validation and still be kept
KEEP_RULE = "one bar; pairs decide"  # in each record: the rule that kept its rungs (`keep`)
TASKS = ("mnist", "shakespeare")  # --task: chapter 6's ladder, or chapter 10's (accelbook.lm)
PRECISIONS = ("auto", "bf16", "fp16")  # --precision: the mixed-precision rung's format ("auto": bf16 where native)
REPEAT_EPOCHS = 0.2   # the length of each paired run (at least MIN_REPEAT_STEPS steps and MIN_STEADY_S timed)
MIN_REPEAT_STEPS = 4
# MIN_STEADY_S (`accelbook.pairs`): each paired run is timed for at least a second


RUNGS = [
    Rung("article recipe", {}, "exact", "the baseline: chapter 4's recipe, with PyTorch's default settings"),
    Rung("device-resident data", {"loader": "device"}, "exact",
         "profiling: the DataLoader's per-image PIL conversion is a phase of its own"),
    Rung("2 epochs", {"epochs": 2.0}, "recipe",
         "a fifth of the steps at the article's constant learning rate, kept if the accuracy holds"),
    Rung("one-cycle schedule", {"schedule": "onecycle", "lr": 1e-2}, "recipe",
         "a learning rate that rises to a peak of 0.01 and anneals over the run (the anchor's "
         "super-convergence, meant for short runs): the same steps, kept only if more accurate on "
         "validation by a fifth of a point"),
    Rung("batch 256", {"batch_size": 256}, "recipe",
         "a quarter of the optimizer steps, each a larger matrix product: faster where the device has "
         "parallelism to spare (the anchor pairs it with one-cycle at a peak of 0.01)"),
    Rung("channels_last", {"channels_last": True}, "round-off",
         "convolutions in NHWC layout, the one oneDNN and cuDNN's tensor-core kernels prefer"),
    Rung("mixed precision", {"precision": "bf16"}, "round-off",
         "autocast: bf16 where native (fp16 + GradScaler on older GPUs): half the bytes, tensor cores or AVX512-BF16"),
    Rung("cudnn.benchmark", {"cudnn_benchmark": True}, "round-off",
         "CUDA: time cuDNN's convolution algorithms on the first call of each shape and keep the fastest"),
    Rung("TF32 matmuls", {"tf32": True}, "round-off",
         "CUDA, Ampere and newer: TF32 tensor cores for float32 matmuls (convolutions use TF32 by default); "
         "this model's one linear layer (128 → 10) is about 0.01% of its multiply-adds, and after a kept "
         "mixed-precision rung, autocast runs it in low precision anyway, so expect nothing here: it pays in "
         "float32 matmul-heavy models"),
    Rung("fused Adam", {"fused": True}, "round-off",
         "one fused update kernel instead of foreach's multi-tensor kernels (CUDA) or a loop over tensors (CPU)"),
    Rung("torch.compile", {"compile": "default"}, "round-off",
         "fuse element-wise work into generated kernels; compilation is paid in the wall time"),
    Rung("CUDA graphs", {"compile": "", "cuda_graphs": True}, "round-off",
         "CUDA: the compiled forward and backward replayed as CUDA graphs, one launch a pass"),
    Rung("right-sized model", {"model": "small"}, "recipe",
         "two convolutions instead of four: a model sized to MNIST, a fraction of the work, if the accuracy holds"),
    Rung("Adam betas (0.7, 0.9)", {"betas": (0.7, 0.9)}, "recipe",
         "the anchor's lower Adam momentum: the same steps, kept only if more accurate on validation by "
         "a fifth of a point"),
    Rung("1.5 epochs", {"epochs": 1.5}, "recipe",
         "stop half-way through the second epoch: fewer steps than the recipe before it (a quarter fewer "
         "after a kept 2-epoch cut), if the accuracy holds"),
]
SAME_COST = frozenset({"betas", "lr", "schedule"})  # a rung changing only these runs the same steps: judged on accuracy
PAYS_ONCE = frozenset({"compile", "cuda_graphs", "cudnn_benchmark"})  # one-time costs the pairs leave out


def same_cost(changes: dict) -> bool:
    """True for a rung's `changes` that leave the steps and the model as they were (only SAME_COST fields)."""
    return bool(changes) and set(changes) <= SAME_COST


def pays_once(changes: dict) -> bool:
    """True for `changes` with a one-time cost (compilation, graph capture, autotuning: PAYS_ONCE fields)
    outside the paired runs' steady window, so that only a full run's wall time shows it."""
    return bool(set(changes) & PAYS_ONCE)

# The book's fastest recipe: the rungs kept in the book's CPU record of 2026-12-02 (data path, batch and
# schedule, channels_last, bf16, the right-sized model; that ladder changed several fields per rung, which
# today's rungs change one at a time: every rung from "device-resident data" to "1.5 epochs" but the
# CUDA-only ones, fused Adam and torch.compile), trained on all 60,000 images. Fused Adam is left
# out: on the CPU its rung went either way by a few seconds (kept in that record; within the noise in the
# paired repeats of the 2026-12-04 record). Inherited from the anchor, whose author reports test accuracy:
# batch 256, one-cycle at a peak of 0.01, betas (0.7, 0.9). Chosen on the validation split: the 16-channel
# first convolution; 1.5 epochs is a margin (validation does not separate 1, 1.25 and 1.5 epochs in
# chapter 6).
# Use `fastest_for(device)`: fp16 + GradScaler where bf16 is not native.
FASTEST = Recipe(model="small", loader="device", batch_size=256, epochs=1.5, lr=1e-2, betas=(0.7, 0.9),
                 schedule="onecycle", channels_last=True, precision="bf16", train_images="all")


def mixed_precision(device: torch.device, asked: str = "auto") -> str:
    """The format of the mixed-precision rung on `device`: `asked`, or ("auto") bf16 where native, else fp16 on CUDA."""
    if asked not in PRECISIONS:
        raise ValueError(f"unknown precision {asked!r}: use one of {', '.join(PRECISIONS)}")
    if asked != "auto":
        return asked
    device = torch.device(device)
    return "fp16" if device.type == "cuda" and not bf16_supported(device) else "bf16"


def for_device(recipe: Recipe, device: torch.device, precision: str = "auto") -> Recipe:
    """`recipe` with its reduced precision (if any) as `device` runs it: `mixed_precision(device, precision)`."""
    if recipe.precision == "fp32":
        return recipe
    return replace(recipe, precision=mixed_precision(device, precision))


def fastest_for(device: torch.device, precision: str = "auto") -> Recipe:
    """FASTEST as `device` runs it (fp16 + GradScaler on a GPU without native bf16); InvalidArgument if it cannot run."""
    recipe = for_device(FASTEST, device, precision)
    reason = unsupported(recipe, device)
    if reason:
        raise InvalidArgument(f"the book's fastest recipe cannot run on {device}: {reason}")
    return recipe


def check_kind(rung: Rung, recipe: Recipe, device: torch.device) -> str:
    """The tolerance a rung's check uses: its own kind, or for "round-off" the precision the new recipe computes in.

    A float32 recipe computes its convolutions in TF32 on Ampere and newer GPUs (PyTorch's default), so
    its round-off there is TF32's.
    """
    if rung.check != "round-off":
        return rung.check
    if recipe.precision == "fp32" and (recipe.tf32 or tf32_convolutions(device)):
        return "tf32"
    return recipe.precision


@dataclass
class Row:
    """One rung's outcome: the recipe it ran, its check, its result (or why it was skipped), whether it was kept."""

    rung: str
    recipe: Recipe
    changes: dict
    check: dict | None = None
    results: list[Result] = field(default_factory=list)
    skipped: str | None = None
    kept: bool = False
    repeats: dict | None = None

    def summary(self) -> dict:
        """JSON-ready: the means over seeds (and the spread of the validation accuracy) beside the check."""
        out = {"rung": self.rung, "changes": json_fields(self.changes),
               "skipped": self.skipped, "kept": self.kept,
               "check": None if self.check is None else {k: v for k, v in self.check.items() if k in ("kind", "ok", "max_diff")}}
        if self.results:
            mean = lambda key: statistics.fmean(getattr(r, key) for r in self.results)  # noqa: E731
            accs = [r.val_accuracy for r in self.results]
            energies = [r.energy_j for r in self.results]
            out.update(seeds=len(self.results), wall_s=mean("wall_s"), warmup_s=mean("warmup_s"),
                       steady_images_per_s=mean("steady_images_per_s"), epoch_s=mean("epoch_s"),
                       val_accuracy=statistics.fmean(accs),
                       val_accuracy_std=statistics.stdev(accs) if len(accs) > 1 else None,
                       energy_j=statistics.fmean(energies) if None not in energies else None)
        if self.repeats:
            out["repeats"] = self.repeats
        return out

    def test_report(self) -> dict:
        """The test accuracy of this rung's runs (mean and spread): reported once, for the top of the ladder."""
        accs = [r.test_accuracy for r in self.results]
        return {"rung": self.rung, "seeds": len(accs), "test_accuracy": statistics.fmean(accs),
                "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None}


def climb(device: torch.device, data: Data, rungs: list[int] | None = None, seeds: int = 1,
          epochs_scale: float = 1.0, sampler_read=None, progress: bool = False, log=print,
          precision: str = "auto", repeats: int = 1) -> list[Row]:
    """Run the ladder: each chosen rung applied to the best recipe so far, checked, trained over `seeds`.

    `epochs_scale` shortens every run's epochs (the quick profile; the recipes themselves keep theirs);
    `precision` picks the mixed-precision rung's format (`mixed_precision`). With `repeats` > 1 a
    same-training rung's rate is also timed in that many short runs paired with the recipe it builds on
    (`paired_rates`). A rung is kept (`keep`) when it is faster (in every pair where there are
    repeats, else in wall time; a `pays_once` rung in both) and reaches the validation bar; the next
    rung builds on the best recipe kept so far.
    """
    device = torch.device(device)
    chosen = set(range(len(RUNGS)) if rungs is None else rungs)
    best, best_wall, best_acc, best_rate, base_acc, rows = ARTICLE, None, None, None, None, []
    for i, rung in enumerate(RUNGS):
        if i not in chosen:
            continue
        recipe = for_device(replace(best, **rung.changes), device, precision)
        row = run_rung(rung, recipe, best, device, data, seeds, epochs_scale, sampler_read, progress)
        rows.append(row)
        if row.results and repeats > 1 and rows[0] is not row and rung.check != "recipe":
            rate = max(row.summary()["steady_images_per_s"], best_rate or 0.0)  # the faster side's window
            row.repeats = summary(*paired_rates(best, row.recipe, device, data, repeats, rate))
        if row.results:
            s = row.summary()
            verdict = row.repeats["verdict"] if row.repeats else None
            row.kept = keep(s["wall_s"], s["val_accuracy"], best_wall, best_acc, verdict,
                            same_cost=same_cost(rung.changes), base_acc=base_acc,
                            pays_once=pays_once(rung.changes))
            base_acc = s["val_accuracy"] if base_acc is None else base_acc
            if row.kept:
                best, best_wall, best_acc = recipe, s["wall_s"], s["val_accuracy"]
                best_rate = s["steady_images_per_s"]
        log(f"{i:>2} {row_line(row)}")
    return rows


def shortened(recipe: Recipe, epochs_scale: float) -> Recipe:
    """`recipe` with its epochs times `epochs_scale` (the quick profile runs a fraction of each)."""
    return replace(recipe, epochs=recipe.epochs * epochs_scale)


def run_rung(rung: Rung, recipe: Recipe, best: Recipe, device: torch.device, data: Data, seeds: int,
             epochs_scale: float, sampler_read, progress: bool) -> Row:
    """One rung: skipped where `recipe` cannot run here, checked against `best`, then trained over `seeds`."""
    run = shortened(recipe, epochs_scale)
    row = Row(rung.name, run, run.changes_from(shortened(best, epochs_scale)))
    row.skipped = unsupported(run, device)
    if row.skipped:
        return row
    kind = check_kind(rung, recipe, device)
    row.check = check_change(best, replace(recipe, epochs=best.epochs), kind, device, data)
    if not row.check["ok"]:
        row.skipped = f"check failed: first losses differ by {row.check['max_diff']:.2e} ({kind})"
        return row
    row.results = [train_recipe(run, device, data, seed=s, sampler_read=sampler_read, progress=progress)
                   for s in range(seeds)]
    return row


def paired_rates(before: Recipe, after: Recipe, device: torch.device, data: Data, repeats: int = REPEATS,
                 rate: float | None = None) -> tuple[list[float], list[float]]:
    """Steady images/s of `before` and `after` in `repeats` short runs each, in ABBA order, seed i for pair i.

    Alternating pairs see the same state of the machine, so their ratio is steadier than two long
    runs made minutes apart (`pairs.paired`). Each run lasts `repeat_epochs`: REPEAT_EPOCHS, at least
    MIN_REPEAT_STEPS steps, and long enough to time MIN_STEADY_S at `rate` images/s (the faster of the
    two sides' rates in their training runs, where known). A compiled recipe compiles again in each
    run (`train_recipe` starts from a fresh compilation), inside the warm-up the steady rate leaves out.
    """
    def run(recipe: Recipe) -> Callable[[int], float]:
        window = replace(recipe, epochs=repeat_epochs(recipe, data, rate))
        return lambda seed: train_recipe(window, device, data, seed=seed).steady_images_per_s

    return paired(run(before), run(after), repeats)


def repeat_epochs(recipe: Recipe, data: Data, rate: float | None = None) -> float:
    """The length of a paired run: REPEAT_EPOCHS, at least MIN_REPEAT_STEPS steps and (at `rate` images/s)
    MIN_STEADY_S of timed steps (the images over 0.9: more than the warm-up `train_recipe` leaves out)."""
    images = len(data.train_index(recipe.train_images))
    epochs = max(REPEAT_EPOCHS, MIN_REPEAT_STEPS / max(1, images // recipe.batch_size))
    if rate and rate == rate:
        epochs = max(epochs, MIN_STEADY_S * rate / 0.9 / images)
    return epochs


def row_line(row: Row) -> str:
    """A rung's outcome in the log: why it was skipped, or its time, rate, accuracy and verdict (and its
    paired repeats on a second line)."""
    if row.skipped:
        return f"{row.rung:<24} {row.skipped}"
    s = row.summary()
    line = (f"{row.rung:<24} wall {s['wall_s']:>8.2f} s  {s['steady_images_per_s']:>9,.0f} images/s  "
            f"val {s['val_accuracy']:.2%}  {'kept' if row.kept else 'not kept'}")
    if row.repeats:
        line += f"\n{'':<24} paired rate {text(row.repeats)}"
    return line


def keep(wall: float, acc: float, best_wall: float | None, best_acc: float | None,
         verdict: str | None = None, same_cost: bool = False, base_acc: float | None = None,
         pays_once: bool = False) -> bool:
    """Keep a rung that is faster than the best so far and reaches `bar(base_acc)` on validation: the
    lower of the target and the baseline's accuracy (`base_acc`, rung 0), less SLACK, the same bar for
    every rung. "Faster" is its paired repeats' `verdict` where it has one (one full run against another
    made minutes before is the machine's drift as much as the change), and its wall time where it has
    none; a `pays_once` rung (a one-time cost the pairs leave out) must be faster in both. Keep a
    `same_cost` rung (the same steps of the same model) if it is more accurate than the best so far by at
    least SLACK (one run's accuracy moves by tenths of a point between seeds, so even that margin can
    be noise: `--seeds` averages)."""
    if best_wall is None:
        return True  # the first rung run is the baseline the others build on
    if same_cost:
        return acc >= best_acc + SLACK
    by_wall = wall < best_wall
    faster = by_wall if verdict is None else verdict == "faster" and (by_wall or not pays_once)
    return faster and acc >= bar(best_acc if base_acc is None else base_acc)


def bar(base_acc: float) -> float:
    """The validation accuracy a faster rung must reach: the lower of TARGET and `base_acc`, less SLACK."""
    return min(TARGET, base_acc) - SLACK - 1e-9  # 1e-9: a score on the bar is not lost to round-off


def record(rows: list[Row], device: torch.device, argv: list[str], quick: bool) -> dict:
    """The ladder as a record with provenance (results/ schema), speed-ups relative to rung 0, test accuracy once."""
    from .records import provenance

    prov = provenance(device, argv, kind="ladder")
    summaries = [r.summary() for r in rows]
    base = next((s for s in summaries if s.get("wall_s")), None)
    for s in summaries:
        if base and s.get("wall_s"):
            s["speedup_wall"] = base["wall_s"] / s["wall_s"]
            s["speedup_steady"] = s["steady_images_per_s"] / base["steady_images_per_s"]
    for s, row in zip(summaries, rows, strict=True):
        s["adam"] = adam_implementation(row.recipe, device)  # print what was chosen
    top = next((r for r in reversed(rows) if r.kept), None)
    return {"provenance": prov, "kind": "ladder", "quick": quick, "target": TARGET, "keep_rule": KEEP_RULE,
            "rungs": summaries,
            "top": top.test_report() if top else None,
            "recipes": {r.rung: r.recipe.as_record() for r in rows}}


def race(device: torch.device, data: Data, seeds, precision: str = "auto") -> dict[str, list[dict]]:
    """The anchor against the book's fastest recipe: one untimed warm-up run each, then the seeds, alternating.

    Both run under the book's recipe's backend settings (`backend_settings`: PyTorch's defaults here);
    each timed run goes from building its model to its test accuracy.
    """
    from .anchors import anchor_tensors, train_anchor

    device, book = torch.device(device), fastest_for(device, precision)
    runs: dict[str, list[dict]] = {"anchor (re-implemented)": [], "book's fastest": []}
    for seed in [None, *seeds]:  # None: the warm-up (allocator, kernel choice, caches), not counted
        tensors = anchor_tensors(data, device, seed or 0)
        with backend_settings(book):
            anchor = train_anchor(tensors, device, seed or 0)
        del tensors
        fast = train_recipe(book, device, data, seed=seed or 0)
        if seed is not None:
            runs["anchor (re-implemented)"].append(anchor)
            runs["book's fastest"].append({"wall_s": fast.wall_s, "test_accuracy": fast.test_accuracy})
    return runs


def table(rec: dict) -> str:
    """A record's rungs as an aligned text table, and the top rung's test accuracy (reported once); over
    several seeds, the means, with the validation accuracy's standard deviation in points (± pts)."""
    seeds = seeds_of(rec)
    spread = f"{'± pts':>7}" if seeds > 1 else ""
    lines = [f"{'rung':<26}{'wall s':>9}{'images/s':>10}{'s/epoch':>9}{'val acc':>9}{spread}{'speed-up':>9}  kept"]
    for s in rec["rungs"]:
        if s.get("wall_s") is None:
            lines.append(f"{s['rung']:<26}  {s['skipped'] or '-'}")
            continue
        val = f"{s['val_accuracy']:>9.2%}" if s.get("val_accuracy") is not None else f"{'-':>9}"  # older records: none
        if spread:
            std = s.get("val_accuracy_std")
            val += f"{std * 100:>7.2f}" if std is not None else f"{'-':>7}"
        lines.append(f"{s['rung']:<26}{s['wall_s']:>9.2f}{s['steady_images_per_s']:>10,.0f}{s['epoch_s']:>9.2f}"
                     f"{val}{s.get('speedup_wall', float('nan')):>8.1f}x  {'yes' if s['kept'] else 'no'}")
    if seeds > 1:
        lines.append(f"(wall s, images/s, s/epoch, val acc: means over {seeds} seeds a rung)")
    with_pairs = [s for s in rec["rungs"] if s.get("repeats")]
    if with_pairs:
        order = ("ABBA order" if with_pairs[0]["repeats"].get("order") == "ABBA" else
                 "the recipe before ran first")  # records of 2026-12-04 without an `order`
        lines.append(f"paired repeats (rate over the recipe it builds on; {order}):")
        lines += [f"  {s['rung']:<24}{text(s['repeats'])}" for s in with_pairs]
    top = rec.get("top")
    if top:
        lines.append(f"test accuracy of the top of the ladder ({top['rung']}): {top['test_accuracy']:.2%}\n"
                     f"({top['seeds']} seed(s); every rung was decided on validation)")
    return "\n".join(lines)


def seeds_of(rec: dict) -> int:
    """The training runs (seeds) a ladder record made of each rung: 1 in records without `seeds`."""
    return max((s.get("seeds") or 1 for s in rec["rungs"]), default=1)


def same_recipe(mine: dict, theirs: dict, rung: str) -> bool:
    """True where `rung` ran the same recipe in both records, but for its length (a quick run is shorter)."""
    a, b = (dict((rec.get("recipes") or {}).get(rung) or {}) for rec in (mine, theirs))
    for recipe in (a, b):
        recipe.pop("epochs", None)
    return a == b


def compare(mine: dict, theirs: dict) -> str:
    """Two ladder records rung by rung: wall time and throughput of each, and the ratio (theirs / mine)."""
    other = {s["rung"]: s for s in theirs["rungs"]}
    head = (f"{'rung':<26}{'mine s':>9}{'theirs s':>10}{'ratio':>7}{'mine images/s':>15}{'theirs images/s':>17}\n"
            f"(mine: {mine['provenance']['device_name']}; theirs: {theirs['provenance']['device_name']})")
    lines = [head]
    for s in mine["rungs"]:
        t = other.get(s["rung"], {})
        if s.get("wall_s") is None or t.get("wall_s") is None:
            lines.append(f"{s['rung']:<26}  {s.get('skipped') or t.get('skipped') or 'not in both records'}")
            continue
        if not same_recipe(mine, theirs, s["rung"]):
            lines.append(f"{s['rung']:<26}  not compared: the records kept other rungs before it, so it ran "
                         "another recipe")
            continue
        lines.append(f"{s['rung']:<26}{s['wall_s']:>9.2f}{t['wall_s']:>10.2f}{t['wall_s'] / s['wall_s']:>7.2f}"
                     f"{s['steady_images_per_s']:>15,.0f}{t['steady_images_per_s']:>17,.0f}")
    return "\n".join(lines)


def load_record(path: str | Path, kind: str = "ladder") -> dict:
    """A record of `kind` (a ladder's) from a JSON file, or a one-line error naming what is wrong."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidArgument(f"cannot read ladder record {path}: {err}") from None
    if rec.get("kind") != kind:
        raise InvalidArgument(f"{path} is not a {kind} record (kind {rec.get('kind')!r})")
    return rec


def parse_rungs(text: str, count: int = len(RUNGS)) -> list[int]:
    """'0,1,4-6' -> [0, 1, 4, 5, 6], within a ladder of `count` rungs (default chapter 6's)."""
    chosen = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad rung list {text!r}: use numbers and ranges like 0,2,4-6")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 0 <= lo <= hi < count:
            raise argparse.ArgumentTypeError(f"rungs go from 0 to {count - 1}, got {part.strip()!r}")
        chosen.extend(range(lo, hi + 1))
    return sorted(set(chosen))


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    p = OneLineParser(prog=prog("ladder"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="mnist", help="mnist: chapter 6's CNN (default); shakespeare: "
                   "chapter 10's character-level GPT on Tiny Shakespeare")
    p.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: the fastest available)")
    p.add_argument("--rungs", help=f"which rungs to run, e.g. 0,1,4-6 (mnist 0-{len(RUNGS) - 1}, shakespeare "
                   f"0-{len(LM_RUNGS) - 1}; default all)")
    p.add_argument("--seeds", type=number(int, 1), default=1, help="seeds per rung (mean and spread reported; "
                   "default 1; mnist only)")
    p.add_argument("--repeats", type=number(int, 1),
                   help="pairs of short runs that time each same-training rung against the recipe it builds "
                   "on, in ABBA order (default 4, on CUDA 6; 1: none)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the mixed-precision rung's format: bf16, fp16 (with GradScaler; CUDA), or auto "
                        "(default: bf16 where native, fp16 on GPUs before compute capability 8.0)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run ({QUICK_ENV}=1 too): {QUICK.images:,} "
                   f"images and {QUICK.epochs_scale:g} of each recipe's epochs")
    p.add_argument("--out", type=Path, help="record path (default: results/ladder-<device>-<date>.json, "
                   "results/lm-ladder-<device>-<date>.json for shakespeare)")
    p.add_argument("--no-record", action="store_true", help="print the table only, write no record")
    p.add_argument("--compare", type=Path, metavar="RECORD", help="print this run beside a ladder record")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: climb the task's ladder, print the table, write the record, compare if asked."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()

    def climb_task(args: argparse.Namespace) -> int:
        try:
            rungs = parse_rungs(args.rungs, len(LM_RUNGS if args.task == "shakespeare" else RUNGS)) \
                if args.rungs else None
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument --rungs: {err}")
        if args.task == "shakespeare":
            return climb_shakespeare(args, argv, rungs)
        return climb_and_record(args, argv, rungs)

    return run(parser, climb_task, argv)


def climb_and_record(args: argparse.Namespace, argv: list[str], rungs: list[int] | None) -> int:
    """Climb the chosen rungs, print the table, write the record and the comparison; 0."""
    from .device import pick_device
    from .gpu import nvml_index, nvml_reader

    other = load_record(args.compare) if args.compare else None
    device = pick_device(args.device)
    run_profile = profile(args.quick)
    data = Data.load(limit=run_profile.images)
    read = nvml_reader(nvml_index(device)) if device.type == "cuda" else None
    rows = climb(device, data, rungs, args.seeds, run_profile.epochs_scale, read, not args.no_progress,
                 precision=args.precision, repeats=args.repeats or default_repeats(device.type))
    rec = record(rows, device, argv, run_profile is QUICK)
    print(table(rec))
    write_and_compare(rec, args, device, "ladder", other, compare)
    return 0


def climb_shakespeare(args: argparse.Namespace, argv: list[str], rungs: list[int] | None) -> int:
    """Chapter 10's ladder: each rung checked, then trained to the target loss and timed; table, record, comparison."""
    from . import lm
    from .bench import peak_flops
    from .device import pick_device

    if args.seeds > 1:
        raise InvalidArgument("--seeds: the shakespeare ladder runs one seed per rung (chapter 10's race "
                              "repeats seeds)")
    other = load_record(args.compare, lm.RECORD_KIND) if args.compare else None
    device = pick_device(args.device)
    corpus = lm.Corpus.load()
    base, target = lm.baseline_for(device)
    scale = profile(args.quick).epochs_scale
    peaks = {fmt: peak_flops(device, fmt) for fmt in lm.PRECISIONS if fmt != "fp16" or device.type == "cuda"}
    rows = lm.climb_lm(device, corpus, rungs, iters=max(1, round(base.iters * scale)),
                       peak_flops={fmt: flops for fmt, (flops, _) in peaks.items()}, progress=not args.no_progress,
                       base=base, target=target, eval_iters=max(2, round(base.eval_iters * scale)),
                       repeats=args.repeats or default_repeats(device.type))
    rec = lm.lm_record(rows, device, argv, profile(args.quick) is QUICK)
    rec["peak_flops"] = {fmt: {"flops": flops, "source": source} for fmt, (flops, source) in peaks.items()}
    print(lm_table(rec))
    write_and_compare(rec, args, device, lm.RECORD_KIND, other, lm_compare)
    return 0


def write_and_compare(rec: dict, args: argparse.Namespace, device: torch.device, kind: str, other: dict | None,
                      beside: Callable[[dict, dict], str]) -> None:
    """Save the record (unless --no-record) and print it beside `other` when one was given."""
    if not args.no_record:
        from .records import default_path, save_record

        print(f"wrote {save_record(rec, args.out or default_path(kind, device))}")
    if other is not None:
        print(beside(rec, other))


def lm_table(rec: dict) -> str:
    """A Shakespeare ladder record as text: the peaks MFU is taken over, one line per rung, the top rung."""
    peaks = "; ".join(f"{fmt} {p['flops'] / 1e12:.3g} TFLOP/s ({p['source']})" for fmt, p in
                      rec.get("peak_flops", {}).items() if p["flops"])
    from .lm import lm_row_line

    lines = textwrap.wrap(f"target validation loss {rec['target']}; MFU over the peak of the rung's format: "
                          f"{peaks or '-'}", 88)
    lines += [f"{i:>2} {lm_row_line(r)}" for i, r in enumerate(rec["rungs"])]
    lines.append(f"top of the ladder: {rec['top'] or 'none'}")
    return "\n".join(lines)


def lm_compare(mine: dict, theirs: dict) -> str:
    """Two Shakespeare ladder records side by side, by rung: steady tokens/s and theirs / mine."""
    lines = [f"mine:   {mine['provenance']['device_name']}", f"theirs: {theirs['provenance']['device_name']}",
             f"{'rung':<26}{'mine tok/s':>12}{'theirs tok/s':>14}{'ratio':>7}"]
    other = {r["rung"]: r for r in theirs["rungs"]}
    for r in mine["rungs"]:
        t = other.get(r["rung"], {})
        if not (r.get("tokens_per_s") and t.get("tokens_per_s")):
            lines.append(f"{r['rung']:<26}  {r.get('skipped') or t.get('skipped') or 'not in both records'}")
            continue
        lines.append(f"{r['rung']:<26}{r['tokens_per_s']:>12,.0f}{t['tokens_per_s']:>14,.0f}"
                     f"{t['tokens_per_s'] / r['tokens_per_s']:>7.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
