"""Benchmark records with provenance: written by `python -m accelbook.probe`, read by the chapters.

Records are JSON files in the repository's `results/` folder (one source; see results/README.md).
Readers find that folder from $ACCELBOOK_RESULTS, from the working directory or one of its parents
(a clone: notebooks run in notebooks/), or next to the package's source (an editable install). A
reader without a clone (Colab, a pip-installed package) gets no records and one sentence saying so.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from .config import RESULTS_ENV
from .device import device_name, environment

SCHEMA = "accelbook.record/1"
RESULTS_URL = "https://github.com/accelbook/accelbook/tree/main/results"
COMMANDS = {"probe": "python -m accelbook.probe", "ladder": "python -m accelbook.ladder",  # what writes each kind
            "ddp": "torchrun --standalone --nproc_per_node=<N> -m accelbook.ddp",
            "inference": "python -m accelbook.inference",
            "lm-ladder": "python -m accelbook.ladder --task shakespeare"}


def _is_results(folder: Path) -> bool:
    """True for a folder that holds the book's records (its README names the record schema)."""
    readme = folder / "README.md"
    return readme.is_file() and SCHEMA in readme.read_text(encoding="utf-8", errors="replace")


def results_dir() -> Path | None:
    """The records folder: $ACCELBOOK_RESULTS, else results/ above the working dir or the package; or None."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser()
    here = Path.cwd().resolve()
    candidates = [p / "results" for p in (here, *here.parents)]
    candidates.append(Path(__file__).resolve().parents[2] / "results")  # src/accelbook -> repo root
    return next((c for c in candidates if _is_results(c)), None)


# The CPU features that change what the book measures on a CPU: vector width, int8 dot products, bf16/fp16
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_int8", "amx_bf16", "amx_fp16")


def provenance(device: torch.device, argv: list[str] | None = None, kind: str = "probe") -> dict:
    """What a record depends on: GPU, driver, CUDA runtime, torch, date, and the command that made it.

    Also the host processor's model and its matrix features (`CPU_FEATURES`): on a CPU two machines with
    the same core count can differ by a factor of two in bf16 or int8, and on a GPU the host feeds the
    data path (records that have these fields; older ones do not)."""
    from .gpu import driver_version

    env = environment(device)
    cmd = " ".join([COMMANDS[kind], *(argv if argv is not None else sys.argv[1:])])
    cpu = {"cpu_model": cpu_model(), "cpu_features": cpu_features()}
    return {**env, **cpu, "driver": driver_version() if device.type == "cuda" else None,
            "cuda_runtime": torch.version.cuda if device.type == "cuda" else None,
            "datetime_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": cmd}


def cpu_features() -> list[str]:
    """This processor's vector and matrix extensions among CPU_FEATURES, in that order."""
    from .formats import cpu_flags

    flags = cpu_flags()
    return [f for f in CPU_FEATURES if f in flags]


def cpu_model() -> str | None:
    """The processor's model name: /proc/cpuinfo's "model name" (Linux), else `platform.processor()`."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return (names[0] if names else platform.processor()) or None


def processor(prov: dict) -> str | None:
    """The processor a record's provenance names: a GPU's name, or a CPU's model and bf16 instructions.

    None for a CPU record without `cpu_model` (records before 2026-12-04 name only the core count)."""
    from .formats import matrix_flags

    if prov.get("device", "cpu").split(":")[0] != "cpu":  # cuda:0, mps: the device's own name
        return prov.get("device_name")
    if not prov.get("cpu_model"):
        return None
    bf16 = ", ".join(matrix_flags("bf16", prov.get("cpu_features", []))) or "none"
    return f"{prov['cpu_model']} (bf16 instructions: {bf16})"


def processor_here(device: torch.device) -> str | None:
    """`processor` of this machine's `device`, named the way the records name theirs."""
    return processor({"device": device.type, "device_name": device_name(device),
                      "cpu_model": cpu_model(), "cpu_features": cpu_features()})


def save_record(record: dict, path: str | Path) -> Path:
    """Write `record` (with the schema tag) as indented JSON to `path`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": SCHEMA, **record}, indent=1) + "\n", encoding="utf-8")
    return path


def load_records(kind: str = "probe", folder: str | Path | None = None, gpu_only: bool = True) -> list[dict]:
    """Records of `kind` in the results folder, oldest first; GPU records only unless `gpu_only=False`."""
    folder = Path(folder) if folder is not None else results_dir()
    if folder is None or not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        if rec.get("schema") == SCHEMA and rec.get("kind") == kind:
            if not gpu_only or rec["provenance"]["device"].startswith("cuda"):
                found.append({**rec, "file": path.name})
    return sorted(found, key=lambda r: r["provenance"]["datetime_utc"])


def no_records_message(kind: str = "probe") -> str:
    """The sentence a chapter prints when it has no GPU record of `kind` to show."""
    if results_dir() is None:
        return (f"No results folder here (this is not a clone of the book's repository), so no GPU "
                f"record to show; the committed records are at {RESULTS_URL}")
    return f"No GPU record of kind {kind!r} exists yet in results/: run `{COMMANDS[kind]}` on a GPU."


def default_path(kind: str, device: torch.device) -> Path:
    """results/<kind>-<device-slug>-<date>.json under the working directory (-2, -3, ... if taken)."""
    from datetime import date

    from .device import device_name

    stem = f"{kind}-{slug(device_name(device))}-{date.today().isoformat()}"
    path, n = Path("results") / f"{stem}.json", 1
    while path.exists():  # two runs (or two machines of one name) on the same day: keep both
        n += 1
        path = Path("results") / f"{stem}-{n}.json"
    return path


def slug(text: str) -> str:
    """A file-name-safe lower-case form of `text` (at most 40 characters)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def provenance_line(record: dict) -> str:
    """One line naming the GPU (or the CPU and its model), driver, CUDA, torch, date and command of a record."""
    p = record["provenance"]
    model = f" ({p['cpu_model']})" if p.get("cpu_model") and p["device"] == "cpu" else ""
    return (f"{p['device_name']}{model} | driver {p.get('driver') or '-'} | CUDA {p.get('cuda_runtime') or '-'} | "
            f"torch {p['torch']} | {p['datetime_utc'][:10]} | `{p['command']}`")


def kept_before(rungs: list[dict], name: str) -> str | None:
    """The recipe rung `name` was added to ("<rung 0> with A and B", "<rung 0> alone"), or None if not run."""
    names = [r["rung"] for r in rungs]
    if name not in names or rungs[names.index(name)].get("skipped"):
        return None
    kept = [r["rung"] for r in rungs[1 : names.index(name)] if r["kept"]]
    return f"{rungs[0]['rung']} with " + " and ".join(kept) if kept else f"{rungs[0]['rung']} alone"


def same_processor(here: str | None, rec: dict) -> str:
    """Whether this machine (`here`, as `processor_here` names it) and record `rec` share a processor."""
    there = processor(rec["provenance"])
    if not there:
        return "The record does not name its processor."
    if not here:
        return "This machine does not name its processor."
    if here == there:
        return f"Both report the same processor, {here}."
    return f"They ran on different processors: this page on {here}, the record on {there}."


def compared(rungs: list[dict], rec: dict | None, name: str, label: str, here: str | None) -> str:
    """How this page's and record `rec`'s pairs of rung `name` (`label` in prose) differ: the recipe each
    added it to, and the processor."""
    if not rec:
        return "There is no record to compare with."
    mine, theirs = kept_before(rungs, name), kept_before(rec["rungs"], name)
    if mine is None and theirs is None:
        return f"Neither this page's run nor the record timed {label}."
    if mine is None or theirs is None:
        who = "This page's run" if mine is None else "The record"
        return f"{who} did not time {label}, so there is nothing to compare."
    recipe = (f"Both timed {label} against one recipe, {mine}." if mine == theirs else
              f"The two did not time {label} against the same recipe: this page's run added it to {mine}, "
              f"the record to {theirs}.")
    return f"{recipe} {same_processor(here, rec)} Why the two gains differ, where they do, these runs do not measure."
