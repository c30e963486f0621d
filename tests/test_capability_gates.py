"""Device-capability gates, with faked CUDA capabilities: what a T4 (7.5), an A100 (8.0), an L4 (8.9) and an
H100 (9.0) would measure, what Apple's MPS would, and that each unsupported case says why in one line."""

from types import SimpleNamespace

import pytest
import torch

from accelbook.formats import bf16_supported, fp8_unsupported
from accelbook.probe import formats_for, roof_formats

CUDA = torch.device("cuda")


@pytest.fixture
def capability(monkeypatch):
    """Fake the compute capability that torch reports for any CUDA device."""
    def fake(cc):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cc)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 reports, too
    return fake


@pytest.mark.parametrize("cc, formats", [
    ((7, 5), ["fp32", "fp16"]),                          # T4: fp16 tensor cores only; bf16 merely emulated
    ((8, 0), ["fp32", "tf32", "bf16", "fp16"]),          # A100
    ((8, 9), ["fp32", "tf32", "bf16", "fp16", "fp8"]),   # L4
    ((9, 0), ["fp32", "tf32", "bf16", "fp16", "fp8"]),   # H100, H200
])
def test_probe_formats_follow_the_capability(capability, cc, formats):
    capability(cc)
    assert formats_for(CUDA) == formats
    assert bf16_supported(CUDA) is ("bf16" in formats)


@pytest.mark.parametrize("cc, formats", [
    ((7, 5), ["fp32", "fp16"]),                          # T4: its tensor-core format gets a roof
    ((8, 0), ["fp32", "tf32", "bf16", "fp16"]),          # A100
    ((9, 0), ["fp32", "tf32", "bf16", "fp16", "fp8"]),   # H100, H200
])
def test_roofline_roofs_include_every_tensor_core_format(capability, cc, formats):
    capability(cc)
    assert roof_formats(CUDA) == formats


def test_cpu_roofs_leave_out_emulated_formats(monkeypatch):
    from accelbook import formats

    monkeypatch.setattr(formats, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert roof_formats(torch.device("cpu")) == ["fp32", "bf16"]
    monkeypatch.setattr(formats, "cpu_flags", lambda: {"avx2"})
    assert roof_formats(torch.device("cpu")) == ["fp32"]


@pytest.mark.parametrize("cc", [(7, 5), (8, 0), (8, 6)])
def test_fp8_says_why_not_below_8_9(capability, cc):
    capability(cc)
    reason = fp8_unsupported(CUDA)
    assert reason.startswith("fp8: not measured") and f"{cc[0]}.{cc[1]}" in reason and "\n" not in reason


def test_fp8_runs_from_8_9_and_on_cpu_not_on_mps(capability):
    capability((8, 9))
    assert fp8_unsupported(CUDA) is None
    assert fp8_unsupported(torch.device("cpu")) is None
    assert "mps" in fp8_unsupported(torch.device("mps"))
    assert "fp8" not in formats_for(torch.device("mps"))


SNAPSHOT = {"name": "Tesla T4", "driver": "470.57.02", "cuda_driver_api": "11.4"}


def test_a_gpu_torch_cannot_use_is_reported(monkeypatch, capsys):
    from accelbook import gpu
    from accelbook.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu, "nvml_snapshot", lambda index=0: SNAPSHOT)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    line = gpu.unusable_gpu()
    assert "Tesla T4" in line and "470.57.02" in line and "too old" in line and "13.0" in line
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in gpu.unusable_gpu()
    pick_device("cpu")
    assert "Warning: NVML sees Tesla T4" in capsys.readouterr().out
    monkeypatch.setattr(gpu, "nvml_snapshot", lambda index=0: None)
    assert gpu.unusable_gpu() is None


@pytest.mark.parametrize("name", ["NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe"])
def test_pcie_and_nvl_boards_do_not_take_sxm_rows(name):
    from accelbook.specs import match

    assert match(name) is None


def _fake_nvml(utilization_error):
    """A pynvml stand-in for one GPU whose utilization query raises `utilization_error` (as on MIG, some vGPUs)."""
    import pynvml

    def unsupported(*args):
        raise utilization_error

    return SimpleNamespace(
        NVMLError=pynvml.NVMLError, NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: "handle",
        nvmlDeviceGetName=lambda h: "NVIDIA A100-SXM4-80GB MIG 3g.40gb", nvmlSystemGetDriverVersion=lambda: "580.65.06",
        nvmlSystemGetCudaDriverVersion=lambda: 13000, nvmlDeviceGetUtilizationRates=unsupported,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=2**30, total=40 * 2**30),
        nvmlDeviceGetPowerUsage=unsupported, nvmlDeviceGetEnforcedPowerLimit=unsupported,
        nvmlDeviceGetClockInfo=lambda h, c: 1410, nvmlDeviceGetMaxClockInfo=lambda h, c: 1410,
        nvmlDeviceGetTemperature=lambda h, t: 40)


def test_nvml_report_survives_an_unsupported_utilization_query(monkeypatch, capsys):
    import pynvml

    from accelbook import gpu

    not_supported = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert type(not_supported).__name__ == "NVMLError_NotSupported"
    monkeypatch.setattr(gpu, "_nvml", lambda: _fake_nvml(not_supported))
    snap = gpu.nvml_snapshot(0)
    assert snap["gpu_util_pct"] is None and snap["memory_util_pct"] is None and snap["power_w"] is None
    assert snap["memory_total_gib"] == 40 and snap["name"].endswith("MIG 3g.40gb")
    gpu.describe(0)
    out = capsys.readouterr().out
    assert "gpu_util_pct: not reported" in out and "memory_total_gib: 40" in out


@pytest.mark.parametrize("name", ["NVIDIA A100-SXM4-80GB MIG 3g.40gb", "NVIDIA A100-SXM4-40GB MIG 7g.40gb",
                                  "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA H200 MIG 2g.35gb"])
def test_a_mig_slice_matches_no_row_and_says_why(name):
    from accelbook.specs import match, no_row_reason

    assert match(name) is None
    assert "MIG" in no_row_reason(name) and "share" in no_row_reason(name)


def test_every_unmatched_name_has_a_reason():
    from accelbook.specs import no_row_reason

    assert no_row_reason("NVIDIA H200") is None
    assert "PCIe" in no_row_reason("NVIDIA H100 PCIe") and "SXM" in no_row_reason("NVIDIA H100 NVL")
    assert "not in the book's datasheet table" in no_row_reason("NVIDIA GeForce RTX 3060")


def test_the_ladder_refuses_bf16_on_a_t4_and_offers_fp16(capability, monkeypatch):
    from accelbook import ladder
    from accelbook.recipes import Recipe, Result, unsupported

    capability((7, 5))
    assert "fp16" in unsupported(Recipe(precision="bf16"), CUDA)
    ran = []
    monkeypatch.setattr(ladder, "check_change", lambda before, after, kind, *a, **k: {"kind": kind, "ok": True, "max_diff": 0.0})
    monkeypatch.setattr(ladder, "train_recipe", lambda recipe, *a, **k: ran.append(recipe) or Result(
        wall_s=100.0 - len(ran), warmup_s=0.1, steady_images_per_s=1.0, epoch_s=1.0, steps=1, test_accuracy=0.99,
        val_accuracy=0.99))
    mixed = next(i for i, r in enumerate(ladder.RUNGS) if r.name == "mixed precision")
    rows = ladder.climb(CUDA, None, rungs=[0, mixed], log=lambda *a: None)
    assert rows[1].skipped is None and rows[1].recipe.precision == "fp16" and rows[1].check["kind"] == "fp16"
    assert ladder.fastest_for(CUDA).precision == "fp16"
    rows = ladder.climb(CUDA, None, rungs=[0, mixed], log=lambda *a: None, precision="bf16")  # --precision bf16
    assert "fp16" in rows[1].skipped
    assert ladder.build_parser().parse_args(["--precision", "fp16"]).precision == "fp16"
    capability((8, 0))
    assert ladder.fastest_for(CUDA).precision == "bf16" and ladder.mixed_precision(CUDA) == "bf16"


@pytest.mark.parametrize("cc, kind", [((7, 5), "fp32"), ((8, 0), "tf32"), ((9, 0), "tf32")])
def test_an_fp32_rung_is_checked_at_tf32_round_off_where_convolutions_default_to_tf32(capability, monkeypatch, cc, kind):
    # PyTorch lets cuDNN run float32 convolutions in TF32 on Ampere and newer: channels_last's check must allow for it
    from accelbook import ladder
    from accelbook.recipes import Result

    capability(cc)
    monkeypatch.setattr(ladder, "check_change", lambda before, after, kind, *a, **k: {"kind": kind, "ok": True, "max_diff": 0.0})
    monkeypatch.setattr(ladder, "train_recipe", lambda recipe, *a, **k: Result(
        wall_s=1.0, warmup_s=0.1, steady_images_per_s=1.0, epoch_s=1.0, steps=1, test_accuracy=0.99, val_accuracy=0.99))
    layout = next(i for i, r in enumerate(ladder.RUNGS) if r.name == "channels_last")
    rows = ladder.climb(CUDA, None, rungs=[0, layout], log=lambda *a: None)
    assert rows[1].recipe.precision == "fp32" and rows[1].check["kind"] == kind


@pytest.mark.parametrize("cc, ok", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_the_tf32_rung_runs_only_where_tf32_exists(capability, cc, ok):
    from accelbook.recipes import Recipe, unsupported

    capability(cc)
    reason = unsupported(Recipe(tf32=True), CUDA)
    assert (reason is None) == ok and (ok or "8.0" in reason)


def _chapter7_glue(names: list[str]) -> dict:
    """Chapter 7's summary cell run on measurements shaped like `names` (a CPU's three rows, two GPUs' two)."""
    import json
    from pathlib import Path

    from accelbook import pairs

    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "07_scaling.ipynb").read_text())
    source = next("".join(c["source"]) for c in nb["cells"] if c.get("id") == "4d0f7361")
    rates = {name: [100.0 * (i + 1) + k for k in range(4)] for i, name in enumerate(names)}
    measured = {name: {"n": 1 if i != 1 else 2, "gap": 0.001, "gaps": [0.001, -0.001], "alone": 0.01,
                       "rates": rates[name]} for i, name in enumerate(names)}
    speedups = {name: pairs.summary(rates[names[0]], rates[name]) for name in names[1:]}
    glued = {}
    history = [{"test_accuracy": 0.9 + 0.01 * e} for e in range(2)]  # two epochs of each learning-rate run
    lr_results = {name: {"history": history} for name in ("64", "256", "256 x4", "512 x8")}
    scope = {"measured": measured, "names": names, "speedups": speedups, "pairs": pairs, "ring_ms": 1.0,
             "diverged": [], "lr_results": lr_results, "grad_bytes": 1_041_192, "big_bytes": 2 * 10**9,
             "torch": torch}
    if len(names) > 2:  # the chapter pairs the threads with the processes only where there is a threads row
        scope["threads_vs_ddp"] = pairs.summary(rates[names[1]], rates[names[2]])
    exec(source.replace("from accelbook.summary import results", ""), scope | {"results": glued.update})
    return glued


@pytest.mark.parametrize("names", [["1 process x 1 thread", "2 processes x 1 thread", "1 process x 2 threads"],
                                   ["1 GPU", "2 GPUs"]])
def test_chapter7_reads_whole_sentences_on_two_gpus_too(names):
    """On two or more GPUs chapter 7 has no threads row: its prose must not read 'n/a' where a CPU's reads a rate."""
    glued = _chapter7_glue(names)
    assert "n/a" not in glued.values() and glued["threads-row"].endswith(".")
    assert ("threads ran" in glued["threads-summary"]) == ("GPU" not in glued["threads-row"]) == (len(names) == 3)
    assert glued["lr-final"].endswith(".") and glued["lr-x4-gaps"].count("points") == 2
    assert glued["first-bucket"] == f"{torch.distributed._DEFAULT_FIRST_BUCKET_BYTES:,} bytes"
