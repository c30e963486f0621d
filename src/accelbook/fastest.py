"""The fastest-path page: every change the book measures, in one table, from the committed ladder records.

`page(folder)` renders book/fastest_path.md (MyST markdown) from the newest ladder record of each kind
and device in `folder` (default: the results folder): one row per rung and record, split into "same training, faster" (the same
arithmetic, run faster: true for any model) and "less training" (fewer steps or a smaller model: the
task's own), each with its gain over the best recipe before it and the record it comes from, then the
code each change turns on (`showcode`) and a checklist for the reader's own model.
scripts/polish_chapters.py writes the page; tests/test_fastest.py checks that the committed page is
what the committed records render, so no number on it is typed by hand.
"""

from __future__ import annotations

from pathlib import Path

from .pairs import text
from .records import load_records

KINDS = {"ladder": ("mnist", "images/s", "steady_images_per_s", "chapter 6", "../notebooks/06_optimization"),
         "lm-ladder": ("shakespeare", "tokens/s", "tokens_per_s", "chapter 10", "../notebooks/10_transformer")}
SAME, LESS = "Same training, faster", "Less training"


def group(check_kind: str | None) -> str:
    """A rung's part of the page: a change of the recipe itself ("recipe" check) is less training."""
    return LESS if check_kind == "recipe" else SAME


def rows(record: dict) -> list[dict]:
    """One row per rung after the first: its group, why, the best recipe's rate, wall time and validation
    quality before it and its own, the gains over that recipe, and whether it runs the same steps."""
    from .ladder import same_cost
    from .showcode import task_rungs

    task, unit, rate_key, _, _ = KINDS[record["kind"]]
    declared = {r.name: r for r in task_rungs(task)}
    out, best = [], None
    for i, s in enumerate(record["rungs"]):
        rate, rung = s.get(rate_key), declared.get(s["rung"])
        check = (s.get("check") or {}).get("kind") or (rung.check if rung else None)
        row = {"rung": s["rung"], "group": group(check), "why": rung.why if rung else "", "unit": unit,
               "before": best, "rate": rate, "wall": s.get("wall_s"), "quality": quality(s),
               "runs": s.get("seeds") or 1, "kept": bool(s.get("kept")), "skipped": s.get("skipped"),
               "repeats": s.get("repeats"),
               "same_cost": task == "mnist" and same_cost(s.get("changes") or {}),  # `ladder.keep`'s rule
               "wall_decides": wall_decides(record, s.get("changes") or {})}
        if rate is not None and best is not None:
            row["gain"] = rate / best["rate"]
            row["wall_gain"] = best["wall"] / s["wall_s"]
        if i > 0:
            out.append(row)
        if s.get("kept") and rate is not None:
            best = {"rate": rate, "wall": s["wall_s"], "quality": quality(s)}
    return out


def wall_decides(record: dict, changes: dict) -> bool:
    """Whether a paired rung's one full run had a say in keeping it: in chapter 6's records before they named
    a `keep_rule` (faster in both), and for a change with a one-time cost the pairs leave out; never in
    chapter 10's, whose pairs decide alone (`lm.lm_keep`)."""
    from .ladder import pays_once

    return record["kind"] == "ladder" and (record.get("keep_rule") is None or pays_once(changes))


def quality(summary: dict) -> str:
    """A rung's validation result: accuracy (MNIST; over seeds, the mean ± their standard deviation in
    points) or loss (Shakespeare), or a dash."""
    if summary.get("val_accuracy") is not None:
        std = summary.get("val_accuracy_std")
        spread = f" ± {std * 100:.2f} points" if std is not None else ""
        return f"{summary['val_accuracy']:.2%}{spread}"
    if summary.get("val_loss") is not None:
        return f"loss {summary['val_loss']:.3f}"
    return "—"


def verdict(row: dict) -> str:
    """The row's outcome in a few words: skipped and why, kept (and whether its full run disagreed with
    its pairs), or not kept and why (a same-steps rung's accuracy, its paired repeats, its validation
    accuracy where it was faster, or its wall time)."""
    if row["skipped"]:
        return row["skipped"].removeprefix("skipped: ")
    if row["kept"]:
        slower = row.get("repeats") and row.get("wall_gain", 1) < 1  # the pairs decide (`ladder.keep`)
        return f"kept (faster in every pair; {full_runs(row)} slower)" if slower else "kept"
    if row.get("same_cost"):  # the same steps: kept only if more accurate on validation (`ladder.keep`)
        return "not kept (not a fifth of a point more accurate on validation)"
    paired = (row.get("repeats") or {}).get("verdict")
    if paired and paired != "faster":
        return f"not kept ({paired})"
    if paired and row.get("wall_decides", True) and row.get("wall_gain", 0) <= 1:
        return f"not kept (faster in its pairs; {full_runs(row)} slower)"
    if paired or row.get("wall_gain", 0) > 1:
        return "not kept (below the validation bar)"
    return "not kept (slower)"


def full_runs(row: dict) -> str:
    """The row's full training runs, as the subject of "was slower": one run, or the mean of its seeds."""
    return "its one full run was" if row["runs"] == 1 else f"the mean of its {row['runs']} full runs was"


def gain_text(row: dict) -> str:
    """A same-training row's rate gain: the one run's, or the median of its paired repeats with their range."""
    return text(row["repeats"], page=True) if row.get("repeats") else f"{row['gain']:.2f}×"


def table(record: dict, part: str) -> str:
    """The markdown table of one record's rows in `part` (empty if it has none)."""
    chosen = [row for row in rows(record) if row["group"] == part]
    if not chosen:
        return ""
    same = part == SAME
    unit = chosen[0]["unit"]
    paired = any(row.get("repeats") for row in chosen)
    gain = "gain (pairs: median, range)" if paired else "gain"
    runs = {row["runs"] for row in chosen if row["rate"] is not None}  # skipped rows ran nothing
    each = "one run" if runs <= {1} else f"mean of {max(runs)} runs" if len(runs) == 1 else "mean of its runs"
    head = (f"| change | what it removes | {unit}: best before → this ({each}) | {gain} | verdict |" if same else
            f"| change | what it buys | wall s: best before → this ({each}) | gain | validation | verdict |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in chosen:
        if row["rate"] is None:
            measured, gain = "—", "—"
        elif same:
            measured, gain = f"{row['before']['rate']:,.0f} → {row['rate']:,.0f}", gain_text(row)
        else:  # a same-steps rung's wall ratio is the machine's drift, not a gain
            measured = f"{row['before']['wall']:,.1f} → {row['wall']:,.1f}"
            gain = "same steps" if row.get("same_cost") else f"{row['wall_gain']:.2f}×"
        cells = [row["rung"], row["why"], measured, gain] + ([] if same else [row["quality"]]) + [verdict(row)]
        lines.append("| " + " | ".join(cells) + " |")
    p = record["provenance"]
    model = f", {p['cpu_model']}" if p.get("cpu_model") and p["device"] == "cpu" else ""
    return (f"Measured on {p['device_name']} (torch {p['torch']}, {p['datetime_utc'][:10]}{model}), "
            f"record `{record['file']}`{'' if same else bar_text(record)}:\n\n" + "\n".join(lines))


def bar_text(record: dict) -> str:
    """The validation bar a record's rungs were held to, with the rung 0 result it was set from."""
    from .ladder import bar

    first = next((s for s in record["rungs"] if s.get("val_accuracy") is not None), None)
    if record["kind"] != "ladder" or first is None:
        return ""
    return (f"; validation bar {bar(first['val_accuracy']):.2%}, set from rung 0's "
            f"{quality(first)}")


def rung_row(record: dict | None, rung: str) -> dict:
    """One rung's row of `rows(record)` (rungs after rung 0), or {} without a record or that rung."""
    return next((r for r in rows(record) if r["rung"] == rung), {}) if record else {}


def seed_noise(record: dict | None) -> str:
    """How far one seed moves a rung's validation accuracy in `record` (over its seeds), as a sentence."""
    import statistics

    from .ladder import seeds_of

    if not record:
        return "There is no committed record to show how far the seed alone moves a rung's accuracy."
    stds = [s["val_accuracy_std"] * 100 for s in record["rungs"] if s.get("val_accuracy_std") is not None]
    if not stds:
        return ("The newest record trained each rung once, so it does not show how far the seed alone "
                "moves a rung's accuracy.")
    n, typical = seeds_of(record), statistics.median(stds)
    return (f"The newest record trained each rung {n} times (`--seeds {n}`) and held each rung's mean "
            f"accuracy to the bar. One seed's validation accuracy had a standard deviation of {typical:.2f} "
            f"points (the median over its rungs; {max(stds):.2f} at most), so a rung within about "
            f"{typical:.2f} points of the bar is decided by that noise if it is trained only once.")


def record_rung(record: dict | None, live: dict, rung: str) -> str:
    """What `rung` reached on validation in the committed `record`, beside this run's `live` record."""
    from .ladder import bar, seeds_of

    if not record:
        return "There is no record to compare."
    row = rung_row(record, rung)
    if not row or row["skipped"]:
        return f"The newest record has no result for {rung} to set beside it."
    n, verdict = seeds_of(record), "kept" if row["kept"] else "not kept"
    bars = [bar(next(s for s in r["rungs"] if s.get("wall_s"))["val_accuracy"]) for r in (record, live)]
    recipes = [(r.get("recipes") or {}).get(rung) for r in (record, live)]
    same = (n == seeds_of(live) == 1 and recipes[0] is not None  # seed 0 alone on both sides
            and recipes[0] == recipes[1] and bars[0] == bars[1])
    if same and row["quality"] == rung_row(live, rung).get("quality"):
        return ("The newest record trained the same recipe from the same seed and reached the same "
                f"{row['quality']} against the same bar; it was {verdict} there.")
    times = f", trained {n} times," if n > 1 else ""
    return (f"In the newest record{times} it reached {row['quality']} against that record's bar of "
            f"{bars[0]:.2%}, and was {verdict}.")


def tables(records: list[dict], part: str) -> str:
    """`part`'s table for each record that has rows in it."""
    return "\n\n".join(t for t in (table(rec, part) for rec in records) if t)


def code_section(records: list[dict]) -> str:
    """Each task's rungs with the lines of the package they turn on."""
    from .showcode import ladder_code

    parts = []
    for kind in dict.fromkeys(rec["kind"] for rec in records):
        task, _, _, chapter, doc = KINDS[kind]
        parts.append(f"### The {task} ladder ({{doc}}`{chapter} <{doc}>`)\n\n````python\n{ladder_code(task)}\n````")
    return "\n\n".join(parts)


def newest(records: list[dict]) -> list[dict]:
    """The newest of `records` (oldest first, as `load_records` gives them) for each kind and device."""
    latest = {(r["kind"], r["provenance"]["device"]): r for r in records}
    return [r for r in records if latest[(r["kind"], r["provenance"]["device"])] is r]


def page(folder: str | Path | None = None) -> str:
    """book/fastest_path.md from the ladder records in `folder` (default: the results folder)."""
    records = newest([r for kind in KINDS for r in load_records(kind, folder, gpu_only=False)])
    if not records:
        raise FileNotFoundError(f"no ladder records in {folder or 'the results folder'}")
    runs = sorted({row["runs"] for rec in records for row in rows(rec) if row["rate"] is not None})
    paired = any(row["repeats"] for rec in records for row in rows(rec))
    spread = any("±" in row["quality"] for rec in records for row in rows(rec))
    return TEMPLATE.format(
        same=tables(records, SAME), less=tables(records, LESS), code=code_section(records),
        repeats=repeats_text(runs, paired, spread),
        gpu=("" if any(r["provenance"]["device"].startswith("cuda") for r in records) else
             "No GPU record is committed yet, so every row above was measured on a CPU; the rungs marked "
             "\"needs CUDA\" are the GPU's own. `python -m accelbook.refresh` on a GPU writes the GPU records, "
             "and this page gains their rows."))


def repeats_text(runs: list[int], paired: bool, spread: bool) -> str:
    """What the page's figures are: how many runs each, what a range means, what ± means."""
    if runs == [1] and not paired:
        return ("Every figure on this page is from one run of each rung, so it has no range yet, and a gain "
                "close to 1.00× cannot be told apart from the noise between runs. "
                "`python -m accelbook.ladder` times each same-training rung in pairs by default and writes a "
                "record with ranges.")
    parts = [f"Training runs per rung: {', '.join(map(str, runs))}."]
    if paired:
        without = ("is one run's" if runs == [1] else
                   "compares full runs (one each, or the means of a rung's seeds)")
        parts.append("A gain with a range is the median of short runs paired with the recipe before it "
                     "(alternating runs; newer records swap the order every other pair, ABBA), with the lowest "
                     "and the highest pair; a range that contains 1 is within the noise. A gain without a range "
                     f"{without}, and one close to 1.00× cannot be told apart from the noise.")
    if spread:
        parts.append("A validation accuracy with ± is the mean over the rung's seeds and their standard "
                     "deviation.")
    return " ".join(parts)


TEMPLATE = """\
# The fastest path

*For the reader in a hurry: every change this book measures, what it bought, and the code that makes it.*

```{{note}}
This page is generated from the newest committed ladder record of each device in `results/` by
`accelbook.fastest` (`python scripts/polish_chapters.py` writes it); a test checks that it matches them.
Each rung is applied on top of the best recipe before it, so its gain is measured against that recipe,
not against the article's; a rung not kept is absent from every row after it. The book's fastest recipe
(`FASTEST`, chapter 6) was fixed from an earlier record, so a newer record may keep other rungs.
The ladder runs the rungs of both parts in one order, so a row's "best before" includes the rungs
already kept from the other part.
```

## Same training, faster

The same model, data, batch and schedule, run faster: a better data path, memory layout, number format,
fused kernels, compilation. These hold for any model; what they buy depends on the device. Each is
timed in short runs paired with the recipe before it, and the pairs decide: a change is kept when it was
faster in every pair, whatever its full runs say, made minutes after the other on a machine whose
speed drifts. In chapter 6's ladder a change with a one-time cost the pairs leave out (compilation, graph
capture, autotuning) must also be faster in its full runs; chapter 10's ladder judges every change on its
pairs alone. Like every rung, a faster one must also reach the validation bar (next part): a lower
precision can cost accuracy.

{same}

## Less training

Fewer or larger steps, fewer epochs, a smaller model, and the optimizer settings that let them reach
the accuracy: these change what is computed, so each one is checked on the validation set, not on the
first losses. In today's ladder a faster rung must stay within a fifth of a point of the target (or of
the article's recipe, where that is lower), one bar for every rung. Their gains belong to the task.
A record made with one training run per rung decides a rung within a few tenths of a point of the bar
on the seed: chapter 6 retrains its 2-epoch rung from three seeds, and
`python -m accelbook.ladder --seeds 3` holds every rung's mean to the bar.

{less}

{repeats} {gpu}

## A checklist for your own model

1. **Profile first** ({{doc}}`chapter 5 <../notebooks/05_profiling>`): find the phase that takes the time
   (data, forward, backward, optimizer) before changing anything.
2. **Data path**: keep the GPU fed. Decode once, keep a small data set on the device, or give the
   `DataLoader` workers and {{term}}`pinned memory <pinned memory>` ({{doc}}`chapter 4 <../notebooks/04_training>`).
3. **{{term}}`Mixed precision <AMP>`**: `torch.autocast` with {{term}}`bf16 <bf16>` on GPUs that have it
   (A100, H100), {{term}}`fp16 <fp16>` with a `GradScaler` on older ones (T4, V100).
4. **Memory layout**: `channels_last` for convolutions on {{term}}`tensor cores <tensor core>`.
5. **Fused optimizer**: `torch.optim.AdamW(..., fused=True)`.
6. **`torch.compile`**: fuses element-wise work; pays its compilation in the first steps.
7. **{{term}}`CUDA graphs <CUDA graph>`** (`mode="reduce-overhead"`): for small steps where
   {{term}}`kernel launches <kernel launch>` dominate.
8. **Batch size with its schedule**: a larger batch needs its learning rate and schedule retuned on a
   {{term}}`validation split <validation split>` ({{doc}}`chapter 6 <../notebooks/06_optimization>`).
9. **More GPUs** last: when one GPU is busy and the step is large enough that communication hides
   behind computation ({{doc}}`chapter 7 <../notebooks/07_scaling>`).

## The code of each change

The lines of the book's package that each rung turns on, read from its source (`accelbook.showcode`):

{code}
"""
