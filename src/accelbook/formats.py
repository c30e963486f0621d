"""Number formats for deep learning: range, precision, and which hardware accelerates them (chapter 1)."""

from __future__ import annotations

import torch

# name -> (torch dtype or None, exponent bits, mantissa bits stored). TF32 is a tensor-core mode,
# not a storage dtype: float32's 8 exponent bits with 10 mantissa bits.
FORMATS = {
    "fp32": (torch.float32, 8, 23),
    "tf32": (None, 8, 10),
    "bf16": (torch.bfloat16, 8, 7),
    "fp16": (torch.float16, 5, 10),
    "fp8 e4m3": (torch.float8_e4m3fn, 4, 3),
    "fp8 e5m2": (torch.float8_e5m2, 5, 2),
}

# First NVIDIA architecture whose tensor cores take each format, as (compute capability, name).
FIRST_TENSOR_CORES = {"fp16": ((7, 0), "Volta"), "tf32": ((8, 0), "Ampere"), "bf16": ((8, 0), "Ampere"),
                      "fp8 e4m3": ((8, 9), "Ada / Hopper"), "fp8 e5m2": ((8, 9), "Ada / Hopper")}

# x86 instructions that compute a format natively (AVX-512 vector units and AMX tiles); others convert.
CPU_FORMAT_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 arithmetic on `device`: CPU and MPS yes, CUDA from compute capability 8.0 (no emulation).

    `torch.cuda.is_bf16_supported()` also says yes on a T4 (7.5), which only emulates bf16, slowly.
    """
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def fp8_unsupported(device: torch.device) -> str | None:
    """Why an fp8 matmul (`torch._scaled_mm`) cannot run on `device`, in one line; None where it can."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return (f"fp8: not measured: torch._scaled_mm needs compute capability 8.9 or newer "
                    f"(Ada, Hopper); this GPU has {major}.{minor}")
        return None
    if device.type == "cpu":
        return None if hasattr(torch, "_scaled_mm") else "fp8: not measured: this torch has no _scaled_mm"
    return f"fp8: not measured: no scaled fp8 matmul on {device.type}"


def format_row(name: str) -> dict:
    """Bits, machine epsilon, largest and smallest normal value of format `name`."""
    dtype, exp_bits, man_bits = FORMATS[name]
    if dtype is not None:
        fi = torch.finfo(dtype)
        eps, big, tiny = fi.eps, fi.max, fi.tiny
    else:  # TF32: float32's range, 10-bit mantissa
        fi = torch.finfo(torch.float32)
        eps, big, tiny = 2.0 ** -man_bits, (2 - 2.0 ** -man_bits) * 2.0 ** 127, fi.tiny
    return {"format": name, "bits": 1 + exp_bits + man_bits, "exponent": exp_bits, "mantissa": man_bits,
            "eps": eps, "max": big, "min_normal": tiny}


def format_table() -> list[dict]:
    """`format_row` for every format in FORMATS."""
    return [format_row(name) for name in FORMATS]


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def matrix_flags(name: str, flags) -> list[str]:
    """The x86 instructions among `flags` that compute format `name` natively (CPU_FORMAT_FLAGS), sorted."""
    return sorted(CPU_FORMAT_FLAGS.get(name, set()) & set(flags))


def accelerated_here(name: str, device: torch.device) -> str:
    """Whether this device has matrix hardware for format `name`, in words."""
    if device.type == "cuda":
        cc = torch.cuda.get_device_capability(device)
        first = FIRST_TENSOR_CORES.get(name)
        if first is None:
            return "CUDA cores (no tensor cores for this format)"
        return "tensor cores" if cc >= first[0] else f"no: tensor cores for it start with {first[1]}"
    if device.type == "cpu":
        flags = cpu_flags()
        if name == "fp32":
            return "yes: vector units (" + ("AVX-512" if "avx512f" in flags else "SIMD") + ")"
        hits = matrix_flags(name, flags)
        return f"yes: {', '.join(hits)}" if hits else "no: emulated or converted"
    return "unknown on this backend"
