"""Datasheet figures of real NVIDIA GPUs, each with the key of its source in book/references.bib."""

from __future__ import annotations

# Peak throughputs in TFLOP/s. `sparse` marks rows whose tensor-core figures are the "with sparsity" ones
# (2:4 structured sparsity doubles them; the H100, H200 and L4 datasheets print only those), so dense =
# stored / 2. The A100 and A40 datasheets print each figure as a pair, dense | with sparsity: their rows
# store the dense one. The T4 (Turing) has no sparsity figures.
# None: the GPU has no tensor-core support for that format. Bandwidth in GB/s, power in W.
GPUS = [
    {"gpu": "A100 40GB SXM", "arch": "Ampere", "memory_gb": 40, "bandwidth_gbs": 1555, "fp32": 19.5,
     "tf32": 156, "bf16": 312, "fp16": 312, "fp8": None, "sparse": False, "watts": 400,
     "source": "nvidia2021a100datasheet"},
    {"gpu": "A100 80GB SXM", "arch": "Ampere", "memory_gb": 80, "bandwidth_gbs": 2039, "fp32": 19.5,
     "tf32": 156, "bf16": 312, "fp16": 312, "fp8": None, "sparse": False, "watts": 400,
     "source": "nvidia2021a100datasheet"},
    {"gpu": "A40", "arch": "Ampere", "memory_gb": 48, "bandwidth_gbs": 696, "fp32": 37.4,
     "tf32": 74.8, "bf16": 149.7, "fp16": 149.7, "fp8": None, "sparse": False, "watts": 300,
     "source": "nvidia2021a40datasheet"},
    {"gpu": "H100 SXM", "arch": "Hopper", "memory_gb": 80, "bandwidth_gbs": 3350, "fp32": 67,
     "tf32": 989, "bf16": 1979, "fp16": 1979, "fp8": 3958, "sparse": True, "watts": 700,
     "source": "nvidia2023h100datasheet"},
    {"gpu": "H200 SXM", "arch": "Hopper", "memory_gb": 141, "bandwidth_gbs": 4800, "fp32": 67,
     "tf32": 989, "bf16": 1979, "fp16": 1979, "fp8": 3958, "sparse": True, "watts": 700,
     "source": "nvidia2024h200"},
    {"gpu": "L4", "arch": "Ada Lovelace", "memory_gb": 24, "bandwidth_gbs": 300, "fp32": 30.3,
     "tf32": 120, "bf16": 242, "fp16": 242, "fp8": 485, "sparse": True, "watts": 72,
     "source": "nvidia2023l4datasheet"},
    {"gpu": "T4", "arch": "Turing", "memory_gb": 16, "bandwidth_gbs": 320, "fp32": 8.1,
     "tf32": None, "bf16": None, "fp16": 65, "fp8": None, "sparse": False, "watts": 70,
     "source": "nvidia2019t4datasheet"},
]
TENSOR_FORMATS = ("tf32", "bf16", "fp16", "fp8")


def dense(row: dict, fmt: str) -> float | None:
    """Dense (no sparsity) peak TFLOP/s of `row` in `fmt`, halving datasheet figures quoted with sparsity."""
    value = row[fmt]
    if value is None or fmt not in TENSOR_FORMATS or not row["sparse"]:
        return value
    return value / 2


def spec(gpu: str) -> dict:
    """The row of GPUS named `gpu` (KeyError naming the known GPUs otherwise)."""
    for row in GPUS:
        if row["gpu"] == gpu:
            return row
    raise KeyError(f"no datasheet row {gpu!r}; known: {', '.join(r['gpu'] for r in GPUS)}")


def dense_table() -> list[dict]:
    """Every GPU with dense peaks, bandwidth, power and source: the chapter's datasheet table."""
    rows = []
    for r in GPUS:
        row = {k: r[k] for k in ("gpu", "arch", "memory_gb", "bandwidth_gbs", "fp32")}
        row.update({f: dense(r, f) for f in TENSOR_FORMATS})
        row.update(watts=r["watts"], source=r["source"])
        rows.append(row)
    return rows


def form_factor(name: str) -> str | None:
    """'PCIE', 'NVL' or 'SXM' when a GPU's name says which board it is, else None."""
    words = name.upper().replace("-", " ").split()
    return next((f for f in ("PCIE", "NVL", "SXM") if any(w.startswith(f) for w in words)), None)


def mig_profile(name: str) -> str | None:
    """The MIG profile ('3g.40gb') when a device name is a Multi-Instance GPU slice, else None."""
    words = name.replace("-", " ").split()
    if "MIG" not in (w.upper() for w in words):
        return None
    after = words[[w.upper() for w in words].index("MIG") + 1:]
    return after[0] if after else "MIG"


def match(name: str) -> dict | None:
    """The datasheet row whose GPU a CUDA device name (e.g. 'NVIDIA H200') refers to, if any.

    A PCIe or NVL board of a GPU whose row is the SXM module (H100 PCIe, H100 NVL, A100 PCIe) has other
    clocks, power and often memory, so it matches no row rather than the SXM one; nor does a MIG slice
    (`no_row_reason` says why).
    """
    if mig_profile(name):
        return None
    upper = name.upper()
    board = form_factor(upper)
    for r in sorted(GPUS, key=lambda r: -len(r["gpu"])):
        model, *rest = r["gpu"].split()
        size = rest[0] if rest and rest[0].endswith("GB") else None
        if model in upper.replace("-", " ").split() and (size is None or size in upper.replace(" ", "")):
            if board in ("PCIE", "NVL") and form_factor(r["gpu"]) == "SXM":
                return None
            return r
    return None


def no_row_reason(name: str) -> str | None:
    """Why the device `name` takes no datasheet row, in one sentence; None when it takes one."""
    if match(name):
        return None
    profile = mig_profile(name)
    if profile:
        return (f"{name} is a MIG slice ({profile}): a share of the chip's streaming multiprocessors, memory and "
                f"bandwidth, so the full chip's datasheet peaks do not apply to it")
    board = form_factor(name)
    if board in ("PCIE", "NVL"):
        return (f"{name} is a {'PCIe' if board == 'PCIE' else 'NVL'} board, with other clocks, power and often memory "
                f"than the SXM module of the book's datasheet table")
    return f"{name} is not in the book's datasheet table (accelbook.specs.GPUS)"
