"""Refresh the book on this machine in one command: the records, then every chapter executed, then one archive.

    python -m accelbook.refresh                           # records + every chapter, full profile
    python -m accelbook.refresh --quick --chapters 03,07  # a smoke run of the same path
    python -m accelbook.refresh --requirements            # what it needs beyond torch, and how to bring it offline

Run it from the repository root, on the machine whose numbers the book should show (a GPU box). It
writes everything into one folder (--out, default refresh-<device>-<date>) laid out like the repository:
`results/` (the committed records, then the new ones with their provenance: probe, ladder, ddp, inference) and
`notebooks/` (each chapter executed top to bottom in the full profile, or the quick one, stopping with
one clear message at the first failing cell). It prints a summary and packs the folder into
<out>.tar.gz: copy that back and unpack it over the checkout (`tar -xzf <out>.tar.gz -C <checkout>`).
MNIST comes from $ACCELBOOK_DATA (the four IDX files, gzipped or not); nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import date
from pathlib import Path

from .cli import InvalidArgument, OneLineParser, UserError, fail, prog, run
from .config import DEVICE_ENV, PROGRESS_ENV, QUICK_ENV, RESULTS_ENV
from .ddp import torchrun_command
from .records import slug

# Import name -> pip name of what the command needs beyond torch, torchvision and numpy.
NEEDS = {"nbclient": "nbclient", "nbformat": "nbformat", "ipykernel": "ipykernel", "matplotlib": "matplotlib",
         "tqdm": "tqdm", "yaml": "pyyaml", "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime",
         "safetensors": "safetensors"}
RECORDS = ("probe", "ladder", "lm-ladder", "ddp", "inference")


class RefreshError(RuntimeError):
    """A step of the refresh failed; the message names the step and what went wrong."""


def missing_packages() -> list[str]:
    """The pip names of needed packages that are not importable here."""
    return [pip for name, pip in NEEDS.items() if importlib.util.find_spec(name) is None]


TORCH_FLOOR = (2, 6)  # pyproject's torch>=2.6 (torch.accelerator); a refresh runs the machine's own torch


def old_torch(version: str) -> str | None:
    """Why torch `version` is below the package's floor, in one sentence; None when it is not."""
    numbers = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    if numbers >= TORCH_FLOOR:
        return None
    return (f"torch {version} is older than {'.'.join(map(str, TORCH_FLOOR))}, the oldest the book is tested "
            "with: upgrade torch (and the torchvision that goes with it)")


def requirements_text() -> str:
    """What to install beyond torch/torchvision/numpy, and how to bring it to a machine without internet."""
    names = " ".join(NEEDS.values())
    return "\n".join([
        f"python -m accelbook.refresh needs, beyond torch, torchvision and numpy: {names}",
        "With internet:     pip install " + names + " && pip install --no-deps -e .",
        "Without internet:  on a machine with internet and the same Python and platform,",
        f"                   pip download --dest wheels {names}",
        "                   then copy wheels/ over and run",
        f"                   pip install --no-index --find-links wheels {names} && pip install --no-deps -e .",
        "(--no-deps keeps the machine's own torch; do not reinstall it.)",
    ])


def chapters(folder: Path, wanted: list[str] | None) -> list[Path]:
    """The chapter notebooks of `folder` in order, or those whose name starts with one of `wanted`."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not wanted:
        return found
    picked = [p for p in found if any(p.stem.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(p.stem.startswith(w) for p in found)]
    if unknown:
        raise InvalidArgument(f"no chapter named {', '.join(unknown)} in {folder.name}/ "
                              f"(have: {', '.join(p.stem[:2] for p in found)})")
    return picked


def record_commands(kinds: list[str], device: str, cuda_count: int, quick: bool,
                    tag: str) -> list[tuple[str, list[str], Path]]:
    """(kind, argv, record path relative to the output folder) of each record-writing command on `device`.

    The commands run in the output folder with relative paths, so no record's provenance names a folder of
    this machine."""
    py = sys.executable
    q = ["--quick"] if quick else []
    out = {kind: Path("results") / f"{kind}-{tag}-{date.today().isoformat()}.json" for kind in kinds}
    commands = []
    if "probe" in kinds:
        commands.append(("probe", [py, "-m", "accelbook.probe", "--device", device, *q, "--out", str(out["probe"])],
                         out["probe"]))
    if "ladder" in kinds:
        commands.append(("ladder", [py, "-m", "accelbook.ladder", "--device", device, "--no-progress", *q,
                                    "--out", str(out["ladder"])], out["ladder"]))
    if "lm-ladder" in kinds:  # chapter 10's ladder
        commands.append(("lm-ladder", [py, "-m", "accelbook.ladder", "--task", "shakespeare", "--device", device,
                                       "--no-progress", *q, "--out", str(out["lm-ladder"])], out["lm-ladder"]))
    if "inference" in kinds:
        commands.append(("inference", [py, "-m", "accelbook.inference", "--device", device, *q,
                                       "--out", str(out["inference"])], out["inference"]))
    if "ddp" in kinds:
        gpu = device.startswith("cuda")
        nproc = max(cuda_count, 1) if gpu else 2
        commands.append(("ddp", torchrun_command(nproc, "--device", "cuda" if gpu else "cpu",
                                                 "--epochs", "0" if quick else "1", "--measure", "3" if quick else "20",
                                                 *(["--limit", "2048"] if quick else []), "--out", str(out["ddp"])),
                         out["ddp"]))
    return commands


def run_command(kind: str, argv: list[str], path: Path, cwd: Path) -> float:
    """Run one record-writing command in `cwd`; its seconds, or RefreshError with the command's last words."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0 or not (cwd / path).is_file():
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise RefreshError(f"record {kind!r} failed (exit {done.returncode}): {last}")
    return time.perf_counter() - start


def execute(source: Path, target: Path, timeout: float | None = None) -> float:
    """Execute the notebook `source` top to bottom (cwd: target's folder) and write it to `target`; seconds.

    Stops at the first failing cell with RefreshError naming the chapter, the cell and the error; the
    notebook is still written, with the outputs up to that cell, so the failure can be read there.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(target.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        failed = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        nbformat.write(nb, target)
        raise RefreshError(f"{source.stem}: code cell {failed} failed: {err.ename}: {err.evalue}") from None
    nbformat.write(nb, target)
    return time.perf_counter() - start


def pack(folder: Path) -> Path:
    """`folder` as <folder>.tar.gz, its paths relative to `folder` (unpack over the checkout)."""
    archive = folder.with_name(folder.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return archive


def build_parser() -> OneLineParser:
    """The command line of `python -m accelbook.refresh`."""
    p = OneLineParser(prog=prog("refresh"), description=(
        "Write the book's records and execute every chapter on this machine, into one folder and one archive "
        "to unpack over the checkout. Run from the repository root."))
    p.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: the fastest available, as the chapters pick)")
    p.add_argument("--quick", action="store_true", help="the quick profile (ACCELBOOK_QUICK=1): smoke runs of all steps")
    p.add_argument("--chapters", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                   help="which chapters, by number or name prefix, e.g. 01,05,07 (default: all)")
    p.add_argument("--records", type=lambda s: [c.strip() for c in s.split(",") if c.strip()], default=list(RECORDS),
                   help=f"which records to write, from {','.join(RECORDS)} (default: all; 'none' for none)")
    p.add_argument("--out", type=Path, help="output folder (default: refresh-<device>-<date>)")
    p.add_argument("--requirements", action="store_true", help="print the packages it needs and how to install "
                   "them without internet, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    """Records, chapters, summary, archive; 0 on success, 1 when a step failed, 2 on a user error."""
    parser = build_parser()
    return run(parser, lambda args: refresh(args, parser), argv)


def refresh(args, parser: OneLineParser) -> int:
    """Check the set-up, then write the records and execute the chapters into one folder and archive."""
    if args.requirements:
        print(requirements_text())
        return 0
    kinds = [] if args.records == ["none"] else args.records
    bad = [k for k in kinds if k not in RECORDS]
    if bad:
        parser.error(f"unknown record kind {', '.join(bad)}: use {', '.join(RECORDS)} or none")
    import torch

    if old_torch(torch.__version__):
        raise UserError(old_torch(torch.__version__))
    missing = missing_packages()
    if missing:
        raise UserError(f"missing packages {', '.join(missing)}: see {prog('refresh')} --requirements")
    root = Path.cwd()
    if not (root / "notebooks").is_dir() or not (root / "results" / "README.md").is_file():
        raise UserError("run it from the repository root (the folder with notebooks/ and results/)")
    from .data import gunzip_raw, verify_mnist
    from .device import device_name, pick_device

    selected = chapters(root / "notebooks", args.chapters)
    device = pick_device(args.device, verbose=False)
    gunzip_raw()  # the 11 MB of gzipped IDX files are enough
    verify_mnist(checksum=False)  # nothing downloads during a refresh

    tag = slug(device_name(device))
    out = (args.out or Path(f"refresh-{tag}-{date.today().isoformat()}")).resolve()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out.name} exists and is not empty: choose another --out")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "results", out / "results", dirs_exist_ok=True)  # the chapters see old and new
    os.environ.update({RESULTS_ENV: str(out / "results"), DEVICE_ENV: str(device),
                       PROGRESS_ENV: "0"})  # committed chapters store no progress widgets
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    print(f"refresh on {device_name(device)} ({device}), {'quick' if args.quick else 'full'} profile, into {out.name}/",
          flush=True)
    summary: list[str] = []
    try:
        for kind, command, path in record_commands(kinds, str(device), torch.cuda.device_count(), args.quick, tag):
            seconds = run_command(kind, command, path, out)
            summary.append(f"record  {kind:<7} {seconds:8.1f} s  {path}")
            print(summary[-1], flush=True)
        for source in selected:
            seconds = execute(source, out / "notebooks" / source.name)
            summary.append(f"chapter {source.stem:<22} {seconds:8.1f} s")
            print(summary[-1], flush=True)
    except RefreshError as err:  # a step failed: not the user's input, so exit status 1
        fail(prog("refresh"), f"{err} (what was done is in {out.name}/; nothing was packed)")
        return 1
    archive = pack(out)
    print(f"\n{len(summary)} steps on {device_name(device)}; packed {archive.name} "
          f"({archive.stat().st_size / 1e6:.1f} MB). Unpack it over the checkout:\n"
          f"    tar -xzf {archive.name} -C <checkout>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
