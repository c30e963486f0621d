"""Choosing the device explicitly, and reporting the environment that produced a result."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import torch

from .cli import InvalidArgument, UserError
from .config import DEVICE_ENV

KINDS = ("cuda", "mps", "cpu")


class DeviceNotAvailableError(RuntimeError, UserError):
    """A device was asked for that this machine does not have."""


def _mps_available() -> bool:
    """True when Apple's Metal backend is built and usable."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def accelerator() -> torch.device | None:
    """torch.accelerator's device (PyTorch 2.6+) where one is usable here; else None,
    as on older torch."""
    api = getattr(torch, "accelerator", None)
    # is_available() first: current_accelerator() names the backend torch was built for
    # even where no such device is usable (PyTorch 2.6's documentation said it raises)
    if api is None or not api.is_available():
        return None
    return api.current_accelerator()


def available_kinds() -> list[str]:
    """Device kinds usable here, fastest first (always ends with 'cpu')."""
    kinds = []
    if torch.cuda.is_available():
        kinds.append("cuda")
    if _mps_available():
        kinds.append("mps")
    extra = accelerator()
    if extra is not None and extra.type not in kinds:  # a backend not named here (xpu)
        kinds.insert(0, extra.type)
    return kinds + ["cpu"]


def pick_device(prefer: str | None = None, verbose: bool = True) -> torch.device:
    """Return the device to use: `prefer`, else $ACCELBOOK_DEVICE, else torch.accelerator's, else the fastest.

    Raises ValueError for an unknown kind and RuntimeError for a kind this machine lacks.
    """
    choice = (prefer or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    kind, _, index = choice.partition(":")
    here = available_kinds()
    if kind not in KINDS + ("auto",) and kind not in here:
        raise InvalidArgument(f"unknown device {choice!r}: use one of auto, cuda, cuda:N, mps, cpu")
    if kind == "auto":
        auto = accelerator()  # None without one, or on torch < 2.6: then the explicit list decides
        if auto is not None:
            kind, why = auto.type, "torch.accelerator's choice"
        else:
            kind, why = here[0], "fastest available"
    elif kind not in here:
        raise DeviceNotAvailableError(
            f"device {choice!r} was asked for but is not available here (available: {', '.join(here)}); "
            f"unset {DEVICE_ENV} or choose one of those"
        )
    else:
        why = "asked for"
    if index and kind != "cuda":
        raise InvalidArgument(f"only cuda takes an index, got {choice!r}")
    if index and int(index) >= torch.cuda.device_count():
        raise DeviceNotAvailableError(f"{choice!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    device = torch.device(f"{kind}:{index}" if index else kind)
    if verbose:
        print(f"Using device: {device} ({why}; available: {', '.join(here)})")
        if "cuda" not in here:
            from .gpu import unusable_gpu

            warning = unusable_gpu()
            if warning:
                print(f"Warning: {warning}")
    return device


def device_name(device: torch.device) -> str:
    """A human name for `device`: the GPU's marketing name, or the CPU's architecture."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS) on {platform.machine()}"
    if device.type != "cpu":  # another torch.accelerator backend (xpu, ...): its module may name it
        name = getattr(getattr(torch, device.type, None), "get_device_name", None)
        return name(device) if name else f"{device.type} device"
    return f"CPU {platform.machine()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"


def environment(device: torch.device | None = None) -> dict:
    """The facts that a measurement depends on: device, torch/CUDA/cuDNN versions, date."""
    device = device or pick_device(verbose=False)
    info = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda_in_wheel": torch.version.cuda,
        "cudnn_in_wheel": torch.backends.cudnn.version() if torch.version.cuda else None,
        "cuda_usable": torch.cuda.is_available(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
    return info


def report(device: torch.device | None = None) -> None:
    """Print `environment()` as an aligned table (the setup cell of every chapter)."""
    for key, value in environment(device).items():
        print(f"{key:>18}: {value if value is not None else '-'}")


def process_device(asked: str, local_rank: int) -> torch.device:
    """A distributed process's device: `asked` ("auto": $ACCELBOOK_DEVICE, else as `pick_device`); CUDA gets cuda:LOCAL_RANK.

    The CUDA device is made current (`torch.cuda.set_device`), so NCCL and new tensors use this
    process's GPU.
    """
    device = pick_device(None if asked.strip().lower() == "auto" else asked, verbose=False)
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise DeviceNotAvailableError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device
