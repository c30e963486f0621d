"""The optimization ladder: each rung's check can fail, device gates say why a rung is skipped, and the
command line behaves (help, bad arguments exit 2 in one line, a quick run writes a record, --compare)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from accelbook import ladder
from accelbook.ladder import FASTEST, RUNGS, keep, parse_rungs
from accelbook.recipes import Data, Recipe, bf16_supported, check_change, train_recipe, unsupported

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    """Real MNIST, 4,000 training images (a smoke-size subset)."""
    return Data.load(limit=4000)


def test_the_data_path_change_is_bit_exact(data):
    result = check_change(Recipe(), Recipe(loader="device"), "exact", CPU, data, steps=3)
    assert result["ok"] and result["max_diff"] == 0.0


@pytest.mark.parametrize("change, kind", [({"channels_last": True}, "fp32"), ({"precision": "bf16"}, "bf16"),
                                          ({"fused": True}, "fp32")])
def test_each_execution_change_keeps_the_first_losses(data, change, kind):
    before = Recipe(loader="device", batch_size=128)
    result = check_change(before, replace(before, **change), kind, CPU, data, steps=3)
    assert result["ok"], result


def test_the_check_catches_a_change_of_the_optimisation(data):
    before = Recipe(loader="device", batch_size=128)
    result = check_change(before, replace(before, lr=1e-2), "fp32", CPU, data, steps=3)
    assert not result["ok"] and result["max_diff"] > 1e-3
    assert check_change(before, replace(before, lr=1e-2), "recipe", CPU, data)["ok"]  # accuracy decides
    with pytest.raises(ValueError):
        check_change(before, before, "roughly", CPU, data)


def test_cuda_only_rungs_say_why_on_cpu():
    assert unsupported(Recipe(cuda_graphs=True), CPU) == "skipped: needs CUDA"
    assert unsupported(Recipe(tf32=True, cudnn_benchmark=True), CPU) == "skipped: needs CUDA"
    assert "GradScaler needs CUDA" in unsupported(Recipe(precision="fp16"), CPU)
    assert unsupported(FASTEST, CPU) is None


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_gate_uses_the_compute_capability_not_emulation(monkeypatch, capability, native):
    # A T4 (7.5) emulates bf16, which torch.cuda.is_bf16_supported() reports as support; the gate must not.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert bf16_supported(cuda) is native
    reason = unsupported(Recipe(precision="bf16"), cuda)
    assert (reason is None) is native and (native or "compute capability" in reason)


def test_a_recipe_trains_and_is_timed_honestly(data):
    result = train_recipe(replace(FASTEST, epochs=1.0, train_images="split"), CPU, data, seed=0, record_losses=3)
    assert result.steps == -(-len(data.train_idx) // 256)
    assert 0 < result.warmup_s < result.wall_s and result.steady_images_per_s > 0
    assert result.test_accuracy > 0.5 and result.val_accuracy is not None and result.energy_j is None
    assert len(result.losses) == 3 and result.losses[-1] < result.losses[0]


def test_keep_rule():
    assert keep(100.0, 0.95, None, None)                    # the baseline
    assert keep(10.0, 0.9905, 100.0, 0.9911)                # faster, still on target
    assert keep(10.0, 0.9895, 100.0, 0.9900)                # faster, within the slack of the base
    assert not keep(10.0, 0.9800, 100.0, 0.9911)            # faster but worse
    assert not keep(120.0, 0.9950, 100.0, 0.9911)           # better but slower


def test_rung_lists():
    assert parse_rungs("0,2,4-6") == [0, 2, 4, 5, 6]
    with pytest.raises(Exception):
        parse_rungs(f"0-{len(RUNGS)}")
    assert RUNGS[0].changes == {} and RUNGS[1].check == "exact"


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "accelbook.ladder", *args], capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_cli_help_and_user_errors():
    done = _cli("--help")
    assert done.returncode == 0 and "--compare" in done.stdout and "--rungs" in done.stdout
    for args, needle in [(["--rungs", "99"], "rungs go from 0"), (["--seeds", "0"], "--seeds"),
                         (["--device", "tpu"], "unknown device"), (["--compare", "/nonexistent.json"], "cannot read")]:
        done = _cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_cli_quick_run_writes_a_record_and_compares(tmp_path):
    out = tmp_path / "ladder.json"
    cuda_only = next(i for i, r in enumerate(RUNGS) if r.changes.get("cudnn_benchmark"))
    done = _cli("--quick", "--rungs", f"0,1,{cuda_only}", "--device", "cpu", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert rec["schema"] == "accelbook.record/1" and rec["kind"] == "ladder" and rec["quick"] is True
    assert rec["provenance"]["command"].startswith("python -m accelbook.ladder --quick")
    names = [r["rung"] for r in rec["rungs"]]
    assert names == [RUNGS[0].name, RUNGS[1].name, RUNGS[cuda_only].name]
    assert rec["rungs"][0]["wall_s"] > 0 and rec["rungs"][0]["speedup_wall"] == 1.0
    assert rec["rungs"][1]["check"]["max_diff"] == 0.0
    assert rec["rungs"][2]["skipped"] == "skipped: needs CUDA"  # cudnn.benchmark + TF32
    text = ladder.compare(rec, rec)
    assert text.count(" 1.00") >= 2
    done = _cli("--quick", "--rungs", "1", "--device", "cpu", "--no-record", "--no-progress", "--compare", str(out))
    assert done.returncode == 0 and "theirs" in done.stdout, done.stderr[-2000:]


def test_the_anchor_is_the_described_network_and_learns(data):
    from accelbook.anchors import anchor_tensors, train_anchor
    from accelbook.models import SmallNet

    net = SmallNet(c1=24)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(24, 1, 5, 5), (24,), (32, 24, 3, 3), (32,), (256, 800), (256,), (10, 256), (10,)]
    tensors = anchor_tensors(data, CPU, seed=0)
    assert len(tensors[0]) == len(data.all_index()) and tensors[0].dtype == torch.float32
    result = train_anchor(tensors, CPU, seed=0)
    assert result["wall_s"] > 0 and result["test_accuracy"] > 0.5


def test_the_fastest_recipe_is_the_top_of_the_cpu_ladder():
    kept = ["device-resident data", "batch 256 + one-cycle", "channels_last", "mixed precision", "right-sized model"]
    recipe = ARTICLE_RECIPE = Recipe()
    for rung in RUNGS:
        if rung.name in kept:
            recipe = replace(recipe, **rung.changes)
    assert ARTICLE_RECIPE == ladder.ARTICLE
    assert replace(recipe, train_images="all") == FASTEST


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"),
                    reason="this torch has only the allow_tf32 flags")
@pytest.mark.parametrize("setting", ["torch.backends.fp32_precision = 'tf32'",
                                     "torch.backends.cudnn.conv.fp32_precision = 'ieee'",
                                     "torch.backends.cuda.matmul.fp32_precision = 'tf32'"])
def test_backend_settings_work_after_the_fp32_precision_api_was_used(setting):
    """Once anything sets an fp32_precision, the legacy allow_tf32 flags raise; the ladder must not read them."""
    script = f"""
import torch
from accelbook.recipes import Recipe, backend_settings
{setting}
mm, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
before = (mm.fp32_precision, conv.fp32_precision)
with backend_settings(Recipe(tf32=True, cudnn_benchmark=True)):
    assert (mm.fp32_precision, conv.fp32_precision) == ("tf32", "tf32") and torch.backends.cudnn.benchmark
assert (mm.fp32_precision, conv.fp32_precision) == before and not torch.backends.cudnn.benchmark
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-1500:]
