"""Measure this device (matmul roofline points, memory copy, host<->device transfers) and save a record.

    python -m accelbook.probe --out results/probe-<gpu>-<date>.json   # on a GPU: commit the file
    python -m accelbook.probe --quick --out /tmp/probe.json           # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .bench import copy_probe, matmul_probe, time_op, time_unsynchronized, transfer_probe
from .cli import OneLineParser, prog, run
from .device import pick_device
from .formats import accelerated_here, bf16_supported, fp8_unsupported
from .records import default_path, provenance, save_record


def formats_for(device: torch.device) -> list[str]:
    """Matmul formats worth probing on `device` (TF32 and FP8 only where tensor cores take them)."""
    if device.type == "cuda":
        cc = torch.cuda.get_device_capability(device)
        bf16 = ["bf16"] if bf16_supported(device) else []  # native only: a T4 emulates bf16
        return ["fp32"] + (["tf32"] if cc >= (8, 0) else []) + bf16 + ["fp16"] + ([] if fp8_unsupported(device) else ["fp8"])
    if device.type == "mps":
        return ["fp32", "bf16", "fp16"]
    return ["fp32", "bf16", "fp16"]


def roof_formats(device: torch.device) -> list[str]:
    """The formats whose best matmul makes a compute roof on `device`: fp32 and every probed format that is not
    known to lack matrix hardware there (a T4's fp16; an A100's tf32, bf16 and fp16; fp8 from Ada and Hopper)."""
    names = {"fp8": "fp8 e4m3"}
    return [f for f in formats_for(device)
            if f == "fp32" or not accelerated_here(names.get(f, f), device).startswith("no")]


def sizes_for(device: torch.device, quick: bool) -> list[int]:
    """Square matmul sizes of the sweep: small ones are memory/launch bound, large ones compute bound."""
    if device.type == "cuda":
        return [256, 1024, 4096] if quick else [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    return [128, 512] if quick else [64, 128, 256, 512, 1024, 2048]


def matmul_sweep(device: torch.device, formats: list[str], sizes: list[int], repeats: int = 5) -> list[dict]:
    """`matmul_probe` for every format and size (skipping a size that does not fit in memory)."""
    rows = []
    for fmt in formats:
        for n in sizes:
            try:
                rows.append(matmul_probe(n, fmt, device, repeats=repeats))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
    return rows


def transfer_sweep(device: torch.device, nbytes: int, repeats: int = 5) -> list[dict]:
    """Host->device and device->host bandwidth from pageable and pinned memory (empty without CUDA)."""
    rows = [transfer_probe(nbytes, d, pinned, device, repeats=repeats)
            for d in ("h2d", "d2h") for pinned in (False, True)]
    return [r for r in rows if r is not None]


def async_timing(device: torch.device, n: int, repeats: int = 10) -> dict:
    """One n x n fp32 matmul timed wrongly (bare clock) and rightly (synchronized): the gap is async."""
    a = torch.randn(n, n, device=device)
    wrong = time_unsynchronized(lambda: a @ a, repeats).median
    right = time_op(lambda: a @ a, device, warmup=2, repeats=repeats).median
    return {"n": n, "unsynchronized_s": wrong, "synchronized_s": right}


def probe(device: torch.device, quick: bool = False) -> dict:
    """Every measurement of the record, on `device`."""
    cuda = device.type == "cuda"
    repeats = 3 if quick else 10
    return {
        "kind": "probe",
        "matmul": matmul_sweep(device, formats_for(device), sizes_for(device, quick), repeats),
        "copy": copy_probe((256 if cuda else 64) * 2**20 * (1 if quick else 4), device, repeats=repeats),
        "transfer": transfer_sweep(device, (64 if quick else 256) * 2**20, repeats),
        "async": async_timing(device, 4096 if cuda else 512, repeats),
        "quick": quick,
    }


def build_parser() -> OneLineParser:
    """The command line of `python -m accelbook.probe`."""
    parser = OneLineParser(prog=prog("probe"), description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="record path (default: results/probe-<device>-<date>.json)")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: fastest available)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats: a smoke run")
    return parser


def probe_and_record(args, argv: list[str]) -> int:
    """Probe the device and write the record; 0."""
    device = pick_device(args.device)
    record = {"provenance": provenance(device, argv), **probe(device, args.quick)}
    print(f"wrote {save_record(record, args.out or default_path('probe', device))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: probe the device and write the record; one line and exit status 2 on a user error."""
    argv = sys.argv[1:] if argv is None else argv
    return run(build_parser(), lambda args: probe_and_record(args, argv), argv)


if __name__ == "__main__":
    sys.exit(main())
