"""The optimization ladder: from the article's recipe to the book's fastest, one checked and timed change per rung.

    python -m accelbook.ladder                       # every rung on the fastest device, record into results/
    python -m accelbook.ladder --quick --out /tmp/l.json   # a smoke run on a small subset
    python -m accelbook.ladder --rungs 0,1,2 --device cpu --seeds 3
    python -m accelbook.ladder --compare results/ladder-<gpu>-<date>.json   # your run beside a record

Each rung applies one change to the best recipe so far, checks its first steps against that recipe
(the losses must agree as closely as the change allows), trains it, and keeps it if it is faster and
as accurate (the target, or within a fifth of a point of the recipe it builds on). A rung that cannot run on the device is a row saying why.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .cli import OneLineParser
from .recipes import Data, Recipe, Result, check_change, train_recipe, unsupported

ARTICLE = Recipe()  # rung 0: chapter 4's recipe (DataLoader + PIL transforms, batch 64, Adam 1e-3, 10 epochs, fp32)
TARGET = 0.99       # test accuracy the book's fastest recipe must reach (mean over 5 seeds)
SLACK = 0.002       # a rung may cost this much test accuracy against the recipe it builds on and still be kept


@dataclass(frozen=True)
class Rung:
    """One change to the best recipe so far: its name, the fields it sets, how its first steps are checked, why."""

    name: str
    changes: dict = field(default_factory=dict)
    check: str = "fp32"
    why: str = ""


RUNGS = [
    Rung("article recipe", {}, "exact", "the baseline: chapter 4's run of the article's recipe"),
    Rung("device-resident data", {"loader": "device"}, "exact",
         "profiling: the DataLoader's per-image PIL conversion and transforms are a phase of their own"),
    Rung("batch 256 + one-cycle", {"batch_size": 256, "schedule": "onecycle", "lr": 1e-2, "epochs": 2.0}, "recipe",
         "a bigger batch uses the device better; the one-cycle schedule converges in 2 epochs instead of 10"),
    Rung("channels_last", {"channels_last": True}, "fp32",
         "convolutions in NHWC layout, the one oneDNN and cuDNN's tensor-core kernels prefer"),
    Rung("mixed precision", {"precision": "bf16"}, "bf16",
         "bf16 autocast: half the bytes per activation, tensor cores or AVX512-BF16 for the matmuls"),
    Rung("cudnn.benchmark + TF32", {"cudnn_benchmark": True, "tf32": True}, "bf16",
         "CUDA: pick the fastest convolution algorithm per shape; TF32 for what stays fp32"),
    Rung("fused Adam", {"fused": True}, "fp32", "one optimizer kernel per step instead of one per tensor"),
    Rung("torch.compile", {"compile": "default"}, "bf16",
         "fuse element-wise work into generated kernels; compilation is paid in the wall time"),
    Rung("CUDA graphs", {"compile": "", "cuda_graphs": True}, "bf16",
         "CUDA: replay the whole step's kernels as one graph, no per-kernel launch cost"),
    Rung("right-sized model", {"model": "small", "betas": (0.7, 0.9), "epochs": 1.5}, "recipe",
         "two convolutions instead of four: a model sized to MNIST reaches the target with a fraction of the work"),
]

# The book's fastest recipe: the rungs kept on the book's CPU (data path, batch and schedule, channels_last,
# bf16, the right-sized model), trained on all 60,000 images. On a GPU the ladder may keep more rungs.
FASTEST = Recipe(model="small", loader="device", batch_size=256, epochs=1.5, lr=1e-2, betas=(0.7, 0.9),
                 schedule="onecycle", channels_last=True, precision="bf16", train_images="all")


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

    def summary(self) -> dict:
        """JSON-ready: the means over seeds (and the spread of the accuracy) beside the check."""
        out = {"rung": self.rung, "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in self.changes.items()},
               "skipped": self.skipped, "kept": self.kept,
               "check": None if self.check is None else {k: v for k, v in self.check.items() if k in ("kind", "ok", "max_diff")}}
        if self.results:
            mean = lambda key: statistics.fmean(getattr(r, key) for r in self.results)  # noqa: E731
            accs = [r.test_accuracy for r in self.results]
            energies = [r.energy_j for r in self.results]
            out.update(seeds=len(self.results), wall_s=mean("wall_s"), warmup_s=mean("warmup_s"),
                       steady_images_per_s=mean("steady_images_per_s"), epoch_s=mean("epoch_s"),
                       test_accuracy=statistics.fmean(accs),
                       test_accuracy_std=statistics.stdev(accs) if len(accs) > 1 else None,
                       energy_j=statistics.fmean(energies) if None not in energies else None)
        return out


def climb(device: torch.device, data: Data, rungs: list[int] | None = None, seeds: int = 1,
          epochs_scale: float = 1.0, sampler_read=None, progress: bool = False, log=print) -> list[Row]:
    """Run the ladder: each chosen rung applied to the best recipe so far, checked, trained over `seeds`.

    `epochs_scale` shortens every recipe's epochs (the quick profile). A rung is kept (`keep`) when it
    is faster and as accurate; the next rung builds on the best recipe kept so far.
    """
    chosen = set(range(len(RUNGS)) if rungs is None else rungs)
    best, best_wall, best_acc, rows = ARTICLE, None, None, []
    for i, rung in enumerate(RUNGS):
        if i not in chosen:
            continue
        recipe = replace(best, **rung.changes)
        recipe = replace(recipe, epochs=recipe.epochs * epochs_scale)
        row = Row(rung.name, recipe, recipe.changes_from(replace(best, epochs=best.epochs * epochs_scale)))
        rows.append(row)
        row.skipped = unsupported(recipe, device)
        if row.skipped:
            log(f"{i:>2} {rung.name:<24} {row.skipped}")
            continue
        row.check = check_change(best, replace(recipe, epochs=best.epochs), rung.check, device, data)
        if not row.check["ok"]:
            row.skipped = f"check failed: first losses differ by {row.check['max_diff']:.2e} ({rung.check})"
            log(f"{i:>2} {rung.name:<24} {row.skipped}")
            continue
        row.results = [train_recipe(recipe, device, data, seed=s, sampler_read=sampler_read, progress=progress)
                       for s in range(seeds)]
        s = row.summary()
        row.kept = keep(s["wall_s"], s["test_accuracy"], best_wall, best_acc)
        if row.kept:
            best, best_wall, best_acc = replace(recipe, epochs=recipe.epochs / epochs_scale), s["wall_s"], s["test_accuracy"]
        log(f"{i:>2} {rung.name:<24} wall {s['wall_s']:>8.2f} s  {s['steady_images_per_s']:>9,.0f} img/s  "
            f"test {s['test_accuracy']:.2%}  {'kept' if row.kept else 'not kept'}")
    return rows


def keep(wall: float, acc: float, best_wall: float | None, best_acc: float | None) -> bool:
    """Keep a rung that is faster than the best so far and as accurate (the target, or within SLACK of it)."""
    if best_wall is None:
        return True  # the first rung run is the baseline the others build on
    return wall < best_wall and (acc >= TARGET or acc >= best_acc - SLACK)


def record(rows: list[Row], device: torch.device, argv: list[str], quick: bool) -> dict:
    """The ladder as a record with provenance (results/ schema), speed-ups relative to rung 0."""
    from .records import provenance

    prov = provenance(device, argv, kind="ladder")
    summaries = [r.summary() for r in rows]
    base = next((s for s in summaries if s.get("wall_s")), None)
    for s in summaries:
        if base and s.get("wall_s"):
            s["speedup_wall"] = base["wall_s"] / s["wall_s"]
            s["speedup_steady"] = s["steady_images_per_s"] / base["steady_images_per_s"]
    return {"provenance": prov, "kind": "ladder", "quick": quick, "target": TARGET, "rungs": summaries,
            "recipes": {r.rung: _jsonable(asdict(r.recipe)) for r in rows}}


def _jsonable(d: dict) -> dict:
    """Tuples as lists, so the record round-trips through JSON unchanged."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def table(rec: dict) -> str:
    """A record's rungs as an aligned text table."""
    lines = [f"{'rung':<26}{'wall s':>9}{'img/s':>10}{'s/epoch':>9}{'test acc':>10}{'speed-up':>9}  kept"]
    for s in rec["rungs"]:
        if s.get("wall_s") is None:
            lines.append(f"{s['rung']:<26}  {s['skipped'] or '-'}")
            continue
        lines.append(f"{s['rung']:<26}{s['wall_s']:>9.2f}{s['steady_images_per_s']:>10,.0f}{s['epoch_s']:>9.2f}"
                     f"{s['test_accuracy']:>10.2%}{s.get('speedup_wall', float('nan')):>8.1f}x  {'yes' if s['kept'] else 'no'}")
    return "\n".join(lines)


def compare(mine: dict, theirs: dict) -> str:
    """Two ladder records rung by rung: wall time and throughput of each, and the ratio (theirs / mine)."""
    other = {s["rung"]: s for s in theirs["rungs"]}
    head = (f"{'rung':<26}{'mine s':>9}{'theirs s':>10}{'ratio':>7}{'mine img/s':>12}{'theirs img/s':>13}\n"
            f"(mine: {mine['provenance']['device_name']}; theirs: {theirs['provenance']['device_name']})")
    lines = [head]
    for s in mine["rungs"]:
        t = other.get(s["rung"], {})
        if s.get("wall_s") is None or t.get("wall_s") is None:
            lines.append(f"{s['rung']:<26}  {s.get('skipped') or t.get('skipped') or 'not in both records'}")
            continue
        lines.append(f"{s['rung']:<26}{s['wall_s']:>9.2f}{t['wall_s']:>10.2f}{t['wall_s'] / s['wall_s']:>7.2f}"
                     f"{s['steady_images_per_s']:>12,.0f}{t['steady_images_per_s']:>13,.0f}")
    return "\n".join(lines)


def load_record(path: str | Path) -> dict:
    """A ladder record from a JSON file, or a one-line error naming what is wrong."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read ladder record {path}: {err}") from None
    if rec.get("kind") != "ladder":
        raise ValueError(f"{path} is not a ladder record (kind {rec.get('kind')!r})")
    return rec


def parse_rungs(text: str) -> list[int]:
    """'0,1,4-6' -> [0, 1, 4, 5, 6], within the ladder's rungs."""
    chosen = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad rung list {text!r}: use numbers and ranges like 0,2,4-6")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 0 <= lo <= hi < len(RUNGS):
            raise argparse.ArgumentTypeError(f"rungs go from 0 to {len(RUNGS) - 1}, got {part.strip()!r}")
        chosen.extend(range(lo, hi + 1))
    return sorted(set(chosen))


def parser() -> argparse.ArgumentParser:
    """The command line's options."""
    p = OneLineParser(prog="python -m accelbook.ladder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: the fastest available)")
    p.add_argument("--rungs", type=parse_rungs, help=f"which rungs to run, e.g. 0,1,4-6 (0-{len(RUNGS) - 1}; default all)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per rung (mean and spread reported; default 1)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4,000 images and a tenth of the epochs")
    p.add_argument("--out", type=Path, help="record path (default: results/ladder-<device>-<date>.json)")
    p.add_argument("--no-record", action="store_true", help="print the table only, write no record")
    p.add_argument("--compare", type=Path, metavar="RECORD", help="print this run beside a ladder record")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: climb the ladder, print the table, write the record, compare if asked."""
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    from .device import pick_device
    from .profiling import nvml_index, nvml_reader

    try:
        other = load_record(args.compare) if args.compare else None
        device = pick_device(args.device)
        data = Data.load(limit=4000 if args.quick else None)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    read = nvml_reader(nvml_index(device)) if device.type == "cuda" else None
    rows = climb(device, data, args.rungs, args.seeds, 0.1 if args.quick else 1.0, read, not args.no_progress)
    rec = record(rows, device, argv, args.quick)
    print(table(rec))
    if not args.no_record:
        from .records import default_path, save_record

        path = save_record(rec, args.out or default_path("ladder", device))
        print(f"wrote {path}")
    if other is not None:
        print(compare(rec, other))
    return 0


if __name__ == "__main__":
    sys.exit(main())
