"""Number formats, layer FLOP counts, roofline arithmetic and the datasheet table."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from accelbook.formats import accelerated_here, format_row, format_table
from accelbook.models import ConvNet
from accelbook.roofline import attainable, layer_costs, ridge_point, time_layers
from accelbook.specs import GPUS, dense, dense_table, match, spec

BIB = Path(__file__).resolve().parents[1] / "book" / "references.bib"


@pytest.mark.parametrize("name, eps, biggest", [
    ("fp32", 2**-23, torch.finfo(torch.float32).max), ("tf32", 2**-10, None), ("bf16", 2**-7, None),
    ("fp16", 2**-10, 65504.0), ("fp8 e4m3", 2**-3, 448.0), ("fp8 e5m2", 2**-2, 57344.0)])
def test_epsilon_and_range(name, eps, biggest):
    row = format_row(name)
    assert row["eps"] == eps and row["bits"] in (32, 19, 16, 8)
    if biggest is not None:
        assert row["max"] == biggest


def test_one_plus_eps_is_the_next_number():
    for row in format_table():
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(row["format"])
        if dtype is not None:
            one = torch.tensor(1.0, dtype=dtype)
            assert one + row["eps"] > one and one + row["eps"] / 4 == one


def test_cpu_always_has_fp32():
    """fp32 always runs on a CPU's vector units, named after this CPU's own flags (read here independently)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = re.findall(r"^flags\s*:(.*)$", cpuinfo.read_text(), flags=re.M) if cpuinfo.is_file() else []
    flags = set(lines[0].split()) if lines else set()
    units = "AVX-512" if "avx512f" in flags else "SIMD"
    assert accelerated_here("fp32", torch.device("cpu")) == f"yes: vector units ({units})"
    for name, own in {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}.items():
        answer = accelerated_here(name, torch.device("cpu"))
        assert answer.startswith("yes") == bool(own & flags), (name, answer, sorted(own & flags))


@pytest.mark.parametrize("flags, answers", [
    (set(), {"fp32": "yes: vector units (SIMD)", "bf16": "no: emulated or converted",
             "fp16": "no: emulated or converted"}),
    ({"avx512f", "avx512_bf16", "amx_bf16"}, {"fp32": "yes: vector units (AVX-512)",
                                              "bf16": "yes: amx_bf16, avx512_bf16",
                                              "fp16": "no: emulated or converted"}),
    ({"avx512f", "amx_fp16"}, {"bf16": "no: emulated or converted", "fp16": "yes: amx_fp16"}),
])
def test_cpu_answers_follow_the_cpu_flags(monkeypatch, flags, answers):
    """Each format's answer on a CPU comes from its own instruction-set flags (faked here)."""
    import accelbook.formats as formats

    monkeypatch.setattr(formats, "cpu_flags", lambda: set(flags))
    for name, answer in answers.items():
        assert accelerated_here(name, torch.device("cpu")) == answer


def test_convnet_layer_flops_by_hand():
    costs = {c.name: c for c in layer_costs(ConvNet().eval(), torch.zeros(2, 1, 28, 28))}
    assert list(costs) == ["conv1", "conv2", "conv3", "conv4", "fc"]
    assert costs["conv1"].flops == 2 * 2 * 64 * 28 * 28 * 9
    assert costs["conv2"].flops == 2 * 2 * 64 * 14 * 14 * 64 * 9
    assert costs["fc"].flops == 2 * 2 * 10 * 128
    assert costs["conv1"].bytes == 4 * (2 * 28 * 28 + 64 * 9 + 64 + 2 * 64 * 28 * 28)
    assert costs["conv2"].intensity > costs["conv1"].intensity > costs["fc"].intensity


def test_time_layers_times_every_layer():
    times = time_layers(ConvNet().eval(), torch.zeros(4, 1, 28, 28), warmup=1, repeats=2)
    assert set(times) == {"conv1", "conv2", "conv3", "conv4", "fc"} and min(times.values()) > 0


def test_roofline_arithmetic():
    assert ridge_point(100e12, 2e12) == 50
    assert attainable(10, 100e12, 2e12) == 20e12 and attainable(1000, 100e12, 2e12) == 100e12


def test_sparse_datasheet_figures_are_halved():
    assert dense(spec("H100 SXM"), "bf16") == pytest.approx(989.5)
    assert dense(spec("A100 40GB SXM"), "bf16") == 312 and dense(spec("T4"), "bf16") is None
    assert dense(spec("H100 SXM"), "fp32") == 67  # vector FP32 is never a sparsity figure
    assert len(dense_table()) == len(GPUS)


@pytest.mark.parametrize("name, row", [("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
                                       ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM"), ("Tesla T4", "T4"),
                                       ("NVIDIA H200", "H200 SXM"), ("NVIDIA L4", "L4"),
                                       ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA A40", "A40")])
def test_device_names_match_datasheet_rows(name, row):
    assert match(name)["gpu"] == row


def test_unknown_gpu_has_no_row():
    assert match("NVIDIA GeForce RTX 3060") is None and match("NVIDIA A1200") is None


def test_every_datasheet_row_is_cited_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", BIB.read_text(encoding="utf-8")))
    assert {row["source"] for row in GPUS} <= keys


def test_a_foreach_adam_step_is_a_handful_of_device_operations():
    from accelbook.roofline import foreach_adam_ops

    ops = foreach_adam_ops(ConvNet())
    assert 5 <= len(ops) <= 12 and all("_foreach_" in op for op in ops), ops
    assert len(foreach_adam_ops(nn.Linear(4, 2))) == len(ops)  # one multi-tensor operation per step of the update


def test_matrix_flags_pick_each_formats_own_instructions():
    """bf16 and fp16 each have their own x86 instructions; other formats and unknown flags give none."""
    from accelbook.formats import matrix_flags

    flags = ["avx2", "amx_bf16", "avx512_bf16", "avx512_fp16", "amx_int8"]
    assert matrix_flags("bf16", flags) == ["amx_bf16", "avx512_bf16"]
    assert matrix_flags("fp16", flags) == ["avx512_fp16"]
    assert matrix_flags("fp8 e4m3", flags) == [] and matrix_flags("bf16", []) == []
