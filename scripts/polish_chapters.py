"""Bring each chapter's opening, setup cell and figures in line with the book's facts (idempotent).

    python scripts/polish_chapters.py [notebooks/NN_name.ipynb ...]   # default: every chapter
    python scripts/polish_chapters.py --measure-quick [notebooks/...]  # time the quick profile, then polish

For each chapter it writes, from one source each:
- the "Open in Colab" badge and the Colab install line: from _config.yml's repository (url, branch), the one
  line a publisher changes; the install stops with one sentence, not a pip traceback, when it fails;
- the run-time statement at the end of the opening cell: the full profile from the stored execution's
  per-cell timing (nbclient's record_timing: metadata.execution), the quick profile from
  notebooks/quick-times.json (written by --measure-quick: plain `pytest --nbval` on each chapter, timed),
  and "on a GPU: not yet measured" unless the stored run is a GPU's;
- each figure's caption and alt text (MyST-NB cell metadata mystnb.figure.caption / mystnb.image.alt),
  from FIGURES below, keyed by the cell's id.
It also points README.md's Colab install line and accelbook.records.RESULTS_URL at the repository,
writes README.md's table of run times (between its run-times markers) from the same sources, and
book/fastest_path.md from the committed ladder records (accelbook.fastest).
Only cell metadata and markdown/setup-cell source change: no notebook is executed (outputs stay).
tests/test_chapter_facts.py checks every one of these against its source.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
QUICK_TIMES = NOTEBOOKS / "quick-times.json"
RUNTIME_MARK = "**Run time:**"
NOT_MEASURED = "not yet measured"

# Caption (MyST markdown) and alt text (what the figure shows, for a reader who cannot see it) of every
# chapter figure, by notebook and cell id. An alt text says what the figure draws and where its values are
# printed, not what one run's values were: a re-run would make typed values false.
FIGURES: dict[str, dict[str, tuple[str, str]]] = {
    "01_why_gpus": {
        "93da8db9": (
            "The roofline measured on the device of the stored run: matmul sweeps, the CNN's layers and three "
            "memory-bound operations under the measured roofs.",
            "Log-log roofline plot, attainable TFLOP/s against arithmetic intensity in FLOP per byte. A sloped "
            "line is the measured memory bandwidth and flat lines are the measured compute roofs. Circles, "
            "squares and triangles are matrix multiplications of growing size in each number format; black "
            "stars labelled conv1 to conv4 and fc are the CNN's layers; red diamonds are ReLU, max pool and "
            "the Adam step, far left on the bandwidth slope."),
        "9479a38c": (
            "Drawn only when a layer stayed above the fp32 matmul roof in all its repeats and every "
            "convolution was direct: the roofline with a third roof, the fastest layer's rate.",
            "Log-log roofline plot, TFLOP/s against arithmetic intensity in FLOP per byte, with the measured "
            "roofs and a third, fp32 best of any kernel: the fastest layer's rate, above the fp32 matmul "
            "roof. Matmul points per format, black stars for the layers conv1 to conv4 and fc, the layers "
            "that crossed the fp32 matmul roof at or under the new one, and red diamonds for ReLU, max pool "
            "and the Adam step low on the bandwidth slope."),
    },
    "03_article_model": {
        "046f73e0": (
            "The same model, weights and batches trained twice: with the loss on logits, and with a softmax "
            "before `CrossEntropyLoss`.",
            "Line plot of the mean training loss of each group of batches against training images seen, for "
            "two runs. The run with cross-entropy on logits falls steeply towards zero; the run with a softmax "
            "before the loss falls slowly and stays high, above a dashed grey line marking the lowest loss it "
            "can reach."),
        "77745948": (
            "Focal loss for five values of γ: the larger γ, the less a well-classified example counts.",
            "Line plot of loss against the probability of the true class, from 0 to 1, for gamma 0, 0.5, 1, 2 "
            "and 5. All curves fall to zero at probability 1; the larger gamma, the lower the curve, most of "
            "all in the shaded region above 0.6 marked well classified. Gamma 0 is ordinary cross-entropy."),
    },
    "04_training": {
        "536215a6": (
            "Training and validation loss, and validation accuracy, per epoch of the article's recipe, with "
            "the running average of its weights.",
            "Two line plots against epoch. Left: cross-entropy on a log scale, training loss (solid), "
            "validation loss (dashed) and validation loss of the averaged weights (orange). Right: validation "
            "accuracy in percent of the final weights and of the averaged weights (orange)."),
        "b6d0ea13": (
            "Confusion matrix of the averaged weights on the test set.",
            "Ten-by-ten grid of counts, true digit in rows and predicted digit in columns, shaded by the "
            "logarithm of the count. The diagonal, the correctly read digits, holds nearly all of each row; "
            "the few off-diagonal cells with a number are the model's confusions."),
        "edc2d272": (
            "Test digits the model got wrong, with the true and predicted digit and the model's probability.",
            "A grid of up to 32 small grey handwritten digits from the MNIST test set, each titled true digit, "
            "arrow, predicted digit and the probability the model gave its prediction."),
        "378ffcfd": (
            "The article's section 5.2 measured: ReLU, ReLU6 and ReLU with BatchNorm trained side by side.",
            "Two line plots against epoch, one line per model variant (ReLU, ReLU6, BatchNorm): training and "
            "validation cross-entropy on a log scale on the left, validation accuracy in percent on the "
            "right. The cell prints the validation values as a table, one row per epoch."),
    },
    "05_profiling": {
        "d37d11bb": (
            "One training step from the profiler's trace, on three lanes: phases, top-level operators and GPU "
            "kernels.",
            "Timeline in milliseconds from the start of one training step. The top lane shows its phases (data, "
            "copy, forward, backward, optimizer) as coloured bars; the middle lane the operators run on the CPU, long "
            "ones labelled, such as the convolutions; the bottom lane the GPU kernels, empty when the step ran "
            "on a CPU."),
        "4a5f8e3c": (
            "Time budget of one training step with each input pipeline, split into its phases.",
            "Horizontal stacked bars, one per input pipeline (the standard DataLoader with PIL, and chapter "
            "4's device-resident loader), in milliseconds per training step at batch 64, split into the "
            "phases data, copy, forward, backward and optimizer; a black tick on each bar marks the whole step "
            "timed without synchronization inside."),
        "5c974e36": (
            "Step time and throughput of one training step against batch size.",
            "Two log-log line plots against batch size. Left: milliseconds per training step, measured, beside "
            "a flat dotted line (overhead-bound) and a dashed line proportional to the batch. Right: images per "
            "second, which rises with the batch while the step time stays flat and levels off where it bends "
            "up."),
        "e558b78d": (
            "Memory of one training step against batch size: predicted from shapes, and measured.",
            "Log-log plot of MiB against batch size. A line of activation memory predicted from the layers' "
            "shapes with circles of the profiler's measurements on it, crosses for the measured peak of the "
            "step, and a dashed horizontal line for the fixed cost of parameters, gradients and Adam state, "
            "which the activations pass at small batches."),
        "e4478a42": (
            "Memory allocated through one training step, with its phases shaded.",
            "Step plot of MiB allocated against milliseconds from the start of one training step, over shaded "
            "bands for the phases. Memory climbs through the forward pass, peaks in the backward pass and "
            "returns to about its starting level at the end."),
        "88f4af97": (
            "Device counters sampled every 50 ms while training.",
            "One small line plot per counter against seconds into the training block: CPU use in percent of "
            "all cores on any machine, and on an NVIDIA GPU also its utilization, power in watts and SM clock "
            "in MHz."),
    },
    "06_optimization": {
        "b4a85927": (
            "The optimization ladder on the device of the stored run: wall time to a trained model and "
            "throughput of each rung.",
            "Two horizontal bar charts sharing one row per rung of the ladder, top to bottom. Left: wall time "
            "to a trained model in seconds, log scale; right: steady throughput in images per second, log "
            "scale. Solid blue bars are rungs kept; grey hatched bars were measured but not kept. Each bar's "
            "value is in the ladder's listing printed above the figure, one line per rung."),
        "5c11c3f8": (
            "One epoch at each batch size: validation accuracy and wall time.",
            "Line plot against batch size on a log scale with two vertical axes: validation accuracy after one "
            "epoch in percent (circles, left axis) and wall time of the epoch in seconds (squares, dashed, "
            "right axis). The points are the rows of the table printed above the figure, one per batch size; "
            "a batch too large to learn in one epoch shows as accuracy near chance, 10 percent."),
    },
    "07_scaling": {
        "cb0cc826": (
            "Where a data-parallel step's time goes on this machine, and the all-reduce alone against the ring "
            "model fitted to it.",
            "Left: horizontal stacked bars for 1 process with 1 thread, 2 processes with 1 thread each, and 1 "
            "process with 2 threads, in milliseconds per step at global batch 128: compute in blue and "
            "gradient all-reduce in red. Right: log-log plot "
            "of all-reduce time in milliseconds against bytes all-reduced over 2 ranks, measured points with "
            "the fitted ring model's line, and a dotted vertical line at the size of this CNN's gradients."),
        "5835042c": (
            "Linear learning-rate scaling with warm-up: test accuracy per epoch of each run.",
            "Line plot of test accuracy in percent against epoch, one line per run: batch 64 at learning rate "
            "0.01 as the reference, batch 256 with the rate unchanged, and batches 256 and 512 with the rate "
            "scaled by 4 and 8 with warm-up. The values are the test accuracies printed above the figure, one "
            "line per run."),
        "04e489ac": (
            "The two-level all-reduce model: NVLink inside nodes of 8 GPUs, one 400 Gb/s InfiniBand adapter "
            "per GPU across nodes; cited bandwidths, NCCL's tuner latencies, assumed compute per step.",
            "Three plots against the number of GPUs, 1 to 1024 on a log scale. Left: weak-scaling efficiency "
            "in percent of this CNN at an assumed 1 ms of compute per step, for nodes on NVLink and on PCIe "
            "Gen5; the two lines nearly coincide, stay above 90 percent within one node and fall to about half "
            "at 1024 GPUs, with the region across nodes shaded. Middle: milliseconds per all-reduce by part on "
            "log-log axes: the latency rises with the number of nodes to about 1 ms; the bytes over NVLink stay "
            "flat; the bytes over the network appear past 8 GPUs, a few microseconds for this CNN's gradients (about 1 MB) "
            "and, for 2 GB, below the NVLink part at 16 and 32 GPUs and above it from 64. Right: latency steps per all-reduce on log-log axes: NCCL's "
            "ring through every GPU rises to about 2,000, the two-level ring to about 270, NCCL's tree and "
            "NVLS tree stay below 30."),
    },
    "08_inference": {
        "88a2d920": (
            "Eager PyTorch inference: latency and throughput against batch size.",
            "Two log-log line plots against batch size. Left: latency per batch in milliseconds, median solid "
            "and 99th percentile dotted. Right: images per second, which climbs with the batch and then "
            "flattens."),
        "ab098f81": (
            "Three ways to run the same model: eager PyTorch, `torch.compile` and ONNX Runtime, latency and "
            "throughput against batch size.",
            "Two log-log line plots against batch size, one line per path: eager, torch.compile and ONNX "
            "Runtime. Left: latency per batch in milliseconds, median solid and 99th percentile dotted. "
            "Right: images per second."),
        "1f5620a0": (
            "Digit images as saved (top) and as the model sees them after MNIST's preparation (bottom).",
            "Two rows of digit images. Top row: the image files as saved, each titled with its file name and "
            "label: two MNIST test digits, one of them inverted to black on white, another test digit and a "
            "typed 7. Bottom row: each one after preparation, a white digit on black, cropped, scaled and "
            "centred like an MNIST digit."),
    },
    "09_robustness": {
        "2e3a68de": (
            "Training on a small subset: every remedy against the same baseline, with the early-stopping "
            "point.",
            "Line plot of accuracy against epoch, one colour per run (the Adam baseline and each remedy), "
            "validation accuracy solid and training accuracy dotted. A dashed grey vertical line marks where "
            "early stopping with patience 5 stops the baseline, annotated with the epoch it keeps."),
        "5cb686f4": (
            "Adversarial attacks: test accuracy against the attack's budget, and digits an FGSM attack flipped.",
            "Left: line plot of test accuracy under attack against epsilon, the largest change of any pixel, "
            "for FGSM and PGD; both fall as epsilon grows, PGD lower. Right: up to four digits shown twice, "
            "clean with the model's correct prediction above, and after an FGSM attack with epsilon 0.2 below, "
            "still plainly the same digit to a person but predicted as another."),
        "f8ca7768": (
            "Reliability diagrams of two models before and after temperature scaling.",
            "Two line plots, one per model, of accuracy in each confidence bin against the bin's mean "
            "confidence, before calibration (circles) and after temperature scaling (squares), with the "
            "diagonal of perfect calibration in grey; the legend gives each curve's expected calibration "
            "error. Points below the diagonal are over-confident."),
    },
    "10_transformer": {
        "def6fc38": (
            "Attention's activation memory: what autograd keeps for the backward pass of one attention layer, "
            "explicit against SDPA, measured and predicted from shapes.",
            "Log-log plot of megabytes saved for the backward pass against context length T, for one attention "
            "layer with batch 1 and 4 heads of 32 channels. Circles are the explicit attention, squares SDPA, "
            "each on a grey line of the prediction from shapes. The explicit attention's points rise "
            "four-fold per doubling of T at large T, SDPA's two-fold, and the points sit on their lines."),
        "9880c19c": (
            "The book's Shakespeare recipe: training and validation loss over its whole schedule, with the "
            "target.",
            "Line plot of the estimated training loss (circles) and validation loss (squares), in nats per "
            "character, against the training iteration. Both fall steeply from about 4.2 at iteration 0 and "
            "flatten; a dashed grey horizontal line marks the target validation loss of 1.88."),
    },
}


def repository() -> tuple[str, str]:
    """_config.yml's repository URL (no trailing slash) and branch."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return cfg["repository"]["url"].rstrip("/"), cfg["repository"].get("branch", "main")


def colab_url(path: str) -> str:
    """The Colab address of a file of the repository (the same rule as the site's launch button)."""
    url, branch = repository()
    return f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/{path}"


def install_block(requirement: str) -> str:
    """The setup cell's Colab install: the package from the repository, or one sentence saying why not.

    Written as `ruff format --line-length 88` leaves it, so formatting the notebooks changes nothing here."""
    url, _ = repository()
    return (
        'if "google.colab" in sys.modules:  # Colab: install the companion package (torch stays)\n'
        "    import subprocess\n"
        "\n"
        "    # _config.yml's repository.url (written by scripts/polish_chapters.py)\n"
        f'    REPOSITORY = "{url}"\n'
        f'    PACKAGE = f"{requirement} @ git+{{REPOSITORY}}"\n'
        "    pip = subprocess.run(\n"
        '        [sys.executable, "-m", "pip", "install", "-q", PACKAGE],\n'
        "        capture_output=True,\n"
        "        text=True,\n"
        "    )\n"
        "    if pip.returncode != 0:\n"
        "        raise RuntimeError(\n"
        '            f"could not install the companion package from {REPOSITORY} "\n'
        '            f"(pip exit status {pip.returncode}); check that this address exists and "\n'
        '            f"is public, or run %pip install \'{PACKAGE}\' to see pip\'s own output"\n'
        "        )\n")


# The setup cell's install block (any earlier form): the `if "google.colab"` line and the indented or
# blank lines after it, up to the next line that starts at the margin.
INSTALL = re.compile(r'if "google\.colab" in sys\.modules:[^\n]*\n(?:(?:[ \t][^\n]*)?\n)*?(?=\S)')
REQUIREMENT = re.compile(r'(?:%pip install -q "|f")(?P<req>accelbook(?:\[[\w,]+\])?) @ git\+')


def polish_setup_cell(source: str) -> str:
    """The setup cell with its Colab install rewritten from the repository (and %xmode Minimal first, so
    that a failed install shows as one line)."""
    match = INSTALL.search(source)
    requirement = REQUIREMENT.search(match[0]) if match else None
    if requirement is None:
        raise ValueError("no Colab install found in the setup cell")
    source = source[:match.start()] + install_block(requirement["req"]) + source[match.end():]
    lines = source.split("\n")
    if "%xmode Minimal" in lines and lines.index("%xmode Minimal") > lines.index("import sys"):
        lines.remove("%xmode Minimal")
        lines.insert(lines.index("import sys"), "%xmode Minimal")
    return "\n".join(lines)


def execution_seconds(nb) -> float | None:
    """Time of the stored execution: the sum of its code cells' input-to-reply times (record_timing), or None.

    A sum, so a cell re-executed alone later (one that prints source) adds its own seconds, not the gap."""
    total, timed = 0.0, False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
            return None
        start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                      for k in ("iopub.execute_input", "shell.execute_reply"))
        total, timed = total + (end - start).total_seconds(), True
    return total if timed else None


def stored_device(nb) -> tuple[str, str]:
    """(device, device_name) from the setup cell's stored environment report."""
    setup = next(c for c in nb.cells if c.cell_type == "code")
    text = "".join(o.get("text", "") for o in setup.get("outputs", []) if o.get("output_type") == "stream")
    device = re.search(r"^\s*device: (\S+)$", text, re.M)
    name = re.search(r"^\s*device_name: (.+)$", text, re.M)
    return (device[1] if device else "unknown", name[1].strip() if name else "an unnamed device")


def format_duration(seconds: float) -> str:
    """A duration as a reader reads it, precise to well under 10 %: 45 s, 3 min 20 s, 48 min, 1 h 05 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(seconds / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def quick_times() -> dict:
    """notebooks/quick-times.json: the measured quick-profile time of each chapter, and where it ran."""
    return json.loads(QUICK_TIMES.read_text(encoding="utf-8")) if QUICK_TIMES.is_file() else {"chapters": {}}


def runtime_statement(stem: str, nb) -> str:
    """The chapter's run-time paragraph, from its stored execution and the quick-profile measurement."""
    full = execution_seconds(nb)
    device, name = stored_device(nb)
    q = quick_times()["chapters"].get(stem)
    full_text = (f"full profile {format_duration(full)} on {name} (the run stored on this page)"
                 if full is not None else "full profile: not recorded")
    where = "the same machine" if q is not None and q["machine"] == name else q and q["machine"]
    quick_text = (f"quick profile {format_duration(q['seconds'])} on {where} (plain `pytest --nbval`, "
                  f"{q['date']})" if q is not None else f"quick profile: {NOT_MEASURED}")
    gpu_text = "" if device.startswith("cuda") else f"; on a GPU: {NOT_MEASURED}"
    return f"{RUNTIME_MARK} {full_text}; {quick_text}{gpu_text}."


README_TABLE = re.compile(r"(<!-- run-times: written by scripts/polish_chapters\.py -->\n).*?(<!-- /run-times -->)", re.S)


def readme_table(paths: list[Path]) -> str:
    """README's table of every chapter's full and quick run time, with the totals."""
    quick = quick_times()["chapters"]
    rows, fulls, quicks = [], [], []
    for path in paths:
        fulls.append(execution_seconds(nbformat.read(path, as_version=4)))
        quicks.append(quick[path.stem]["seconds"] if path.stem in quick else None)
        rows.append(f"| {path.stem} | {format_duration(fulls[-1]) if fulls[-1] is not None else 'not recorded'} | "
                    f"{format_duration(quicks[-1]) if quicks[-1] is not None else NOT_MEASURED} |")
    total_full = format_duration(sum(fulls)) if None not in fulls else "not recorded for every chapter"
    total_quick = format_duration(sum(quicks)) if None not in quicks else "not measured for every chapter"
    rows.append(f"| all chapters | {total_full} | {total_quick} |")
    return "| chapter | full profile | quick profile |\n| --- | --- | --- |\n" + "\n".join(rows)


def polish_opening(source: str, stem: str, statement: str) -> str:
    """The opening cell with its Colab badge from the repository and the run-time paragraph at its end."""
    own = colab_url(f"notebooks/{stem}.ipynb")
    source = re.sub(r"\[Open in Colab\]\(https://colab\.research\.google\.com/[^)]+\)", f"[Open in Colab]({own})", source)
    paragraphs = [p for p in source.rstrip().split("\n\n") if not p.startswith(RUNTIME_MARK)]
    return "\n\n".join(paragraphs + [statement])


def polish_figures(stem: str, nb) -> list[str]:
    """Set each figure cell's caption and alt text from FIGURES; the ids of figures FIGURES lacks."""
    known, missing = FIGURES.get(stem, {}), []
    for cell in nb.cells:
        if cell.cell_type != "code" or not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            continue
        if cell.get("id") not in known:
            missing.append(str(cell.get("id")))
            continue
        caption, alt = known[cell["id"]]
        mystnb = cell.metadata.setdefault("mystnb", {})
        mystnb["figure"] = {"caption": caption}
        mystnb["image"] = {"alt": alt}
    return missing


def polish(path: Path) -> list[str]:
    """Polish one chapter in place; the problems left (figures without a caption)."""
    nb = nbformat.read(path, as_version=4)
    stem = path.stem
    opening = next(c for c in nb.cells if c.cell_type == "markdown")
    opening.source = polish_opening(opening.source, stem, runtime_statement(stem, nb))
    setup = next(c for c in nb.cells if c.cell_type == "code")
    setup.source = polish_setup_cell(setup.source)
    missing = polish_figures(stem, nb)
    nbformat.write(nb, path)
    return [f"{stem}: figure cell {i} has no caption in scripts/polish_chapters.py FIGURES" for i in missing]


def polish_repository_mentions() -> None:
    """README.md's Colab install line and accelbook.records.RESULTS_URL, from the repository URL."""
    url, branch = repository()
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    text = re.sub(r'"accelbook @ git\+https://github\.com/[\w.-]+/[\w.-]+"', f'"accelbook @ git+{url}"', text)
    table = readme_table(sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    readme.write_text(README_TABLE.sub(lambda m: m[1] + table + "\n" + m[2], text), encoding="utf-8")
    records = ROOT / "src" / "accelbook" / "records.py"
    text = records.read_text(encoding="utf-8")
    records.write_text(re.sub(r'^RESULTS_URL = "[^"]*"', f'RESULTS_URL = "{url}/tree/{branch}/results"', text,
                              flags=re.M), encoding="utf-8")


def write_fastest_path() -> None:
    """book/fastest_path.md from the committed ladder records (accelbook.fastest)."""
    from accelbook.fastest import page

    (ROOT / "book" / "fastest_path.md").write_text(page(ROOT / "results"), encoding="utf-8")


def measure_quick(paths: list[Path]) -> None:
    """Time plain `pytest --nbval` (the quick profile) on each chapter; record it in quick-times.json."""
    from accelbook.device import device_name, pick_device  # imports torch: only when measuring

    data = quick_times()
    machine = device_name(pick_device(verbose=False))
    env = {k: v for k, v in os.environ.items() if k != "ACCELBOOK_QUICK"}
    for path in paths:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval",
                               str(path.relative_to(ROOT))], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"polish_chapters: {path.name} failed under pytest --nbval; not recorded")
        data["chapters"][path.stem] = {"seconds": round(seconds, 1), "date": date.today().isoformat(),
                                       "machine": machine}
        print(f"{path.stem}: {seconds:.1f} s")
    data["command"] = "python -m pytest --nbval notebooks/NN_name.ipynb (from the repository root)"
    data["chapters"] = dict(sorted(data["chapters"].items()))
    QUICK_TIMES.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapters to polish (default: all)")
    parser.add_argument("--measure-quick", action="store_true",
                        help="first time each chapter under plain `pytest --nbval` (quick profile)")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {missing[0]}")
    if args.measure_quick:
        measure_quick(paths)
    problems = [p for path in paths for p in polish(path)]
    polish_repository_mentions()
    write_fastest_path()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
