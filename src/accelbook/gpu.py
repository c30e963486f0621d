"""What the NVIDIA driver reports (NVML, nvidia-smi), degrading to one clear message without a GPU (chapter 2)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

NO_GPU = "no NVIDIA GPU here"


def _nvml():
    """The initialized pynvml module, or None (package missing, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def _text(value) -> str:
    """NVML returns bytes on old versions, str on new ones."""
    return value.decode() if isinstance(value, bytes) else value


def nvml_snapshot(index: int = 0) -> dict | None:
    """Driver version, utilization, memory, power and clocks of GPU `index` from NVML; None without one."""
    nv = _nvml()
    if nv is None or nv.nvmlDeviceGetCount() <= index:
        return None
    h = nv.nvmlDeviceGetHandleByIndex(index)
    util, mem = _optional(lambda: nv.nvmlDeviceGetUtilizationRates(h)), _optional(lambda: nv.nvmlDeviceGetMemoryInfo(h))
    return {
        "name": _text(nv.nvmlDeviceGetName(h)),
        "driver": _text(nv.nvmlSystemGetDriverVersion()),
        "cuda_driver_api": _cuda_version(nv.nvmlSystemGetCudaDriverVersion()),
        "gpu_util_pct": util and util.gpu,  # None where NVML does not support it (MIG, some vGPUs)
        "memory_util_pct": util and util.memory,
        "memory_used_gib": mem and round(mem.used / 2**30, 2),
        "memory_total_gib": mem and round(mem.total / 2**30, 2),
        "power_w": _optional(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000),
        "power_limit_w": _optional(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000),
        "sm_clock_mhz": _optional(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        "sm_clock_max_mhz": _optional(lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
        "memory_clock_mhz": _optional(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        "temperature_c": _optional(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
    }


def _cuda_version(code: int) -> str:
    """NVML's integer CUDA version (12040) as text ('12.4')."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _optional(read):
    """`read()`, or None where the GPU or driver does not support that query (virtual GPUs, MIG)."""
    try:
        return read()
    except Exception:  # pynvml.NVMLError_NotSupported and friends
        return None


def driver_version() -> str | None:
    """The NVIDIA driver version from NVML, else from nvidia-smi, else None."""
    snap = nvml_snapshot()
    if snap:
        return snap["driver"]
    out = nvidia_smi(["--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def nvidia_smi(args: list[str] | None = None, timeout: float = 20) -> str | None:
    """The output of `nvidia-smi [args]`, or None when the tool is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *(args or [])], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def nvml_index(device) -> int:
    """NVML's index of a CUDA device: matched by UUID (NVML counts in PCI order, CUDA may not); else its ordinal."""
    import torch

    device = torch.device(device)
    ordinal = device.index if device.index is not None else torch.cuda.current_device()
    nv = _nvml()
    try:
        uuid = str(torch.cuda.get_device_properties(ordinal).uuid)
        for i in range(nv.nvmlDeviceGetCount()):
            if _text(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))).removeprefix("GPU-") == uuid:
                return i
    except Exception:  # no NVML, or a driver without UUIDs: fall back to the ordinal
        pass
    return ordinal


def nvml_reader(index: int = 0) -> Callable[[], dict] | None:
    """A function reading GPU `index`'s utilization, memory, SM clock, power and energy counter; None without one.

    NVML averages utilization over 1/6 s to 1 s, and on most GPUs since Ampere `power_w` is a one-second
    average, so samples 50 ms apart repeat values and lag the load. `energy_mj`, the driver's energy
    counter (Volta and newer), has no such lag: `Sampler.energy_j` uses it where it exists.
    """
    nv = _nvml()
    if nv is None or nv.nvmlDeviceGetCount() <= index:
        return None
    h = nv.nvmlDeviceGetHandleByIndex(index)

    def read() -> dict:
        return {"gpu_util_pct": _optional(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu),  # not on MIG
                "memory_used_gib": _optional(lambda: nv.nvmlDeviceGetMemoryInfo(h).used / 2**30),
                "sm_clock_mhz": _optional(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                "power_w": _optional(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000),
                "energy_mj": _optional(lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h))}

    return read


def unusable_gpu() -> str | None:
    """One line when NVML sees an NVIDIA GPU that torch cannot use (driver too old, CPU-only build); else None."""
    import torch

    if torch.cuda.is_available():
        return None
    snap = nvml_snapshot()
    if snap is None:
        return None
    if torch.version.cuda is None:
        return (f"NVML sees {snap['name']} (driver {snap['driver']}), but this torch {torch.__version__} is a "
                f"CPU-only build: install a CUDA build of torch to use the GPU")
    return (f"NVML sees {snap['name']} (driver {snap['driver']}, which supports CUDA up to "
            f"{snap['cuda_driver_api']}), but torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
            f"cannot use it: the driver is probably too old for this build; update the driver or install a "
            f"torch built for an older CUDA")


def describe(device=None) -> None:
    """Print NVML's snapshot of a GPU (a CUDA device, an NVML index, or the current one) as a table, or say
    plainly that there is no NVIDIA GPU."""
    import torch

    if isinstance(device, int):
        index = device
    elif device is not None and torch.device(device).type == "cuda":
        index = nvml_index(device)
    else:
        index = nvml_index(torch.device("cuda")) if torch.cuda.is_available() else 0
    snap = nvml_snapshot(index)
    if snap is None:
        print(f"NVML: {NO_GPU} (no NVIDIA driver or device visible; nvidia-ml-py "
              f"{'installed' if _has_pynvml() else 'not installed'})")
        return
    for key, value in snap.items():
        print(f"{key:>18}: {value if value is not None else 'not reported'}")


def _has_pynvml() -> bool:
    """True when the nvidia-ml-py package (module pynvml) can be imported."""
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True
