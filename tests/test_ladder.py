"""The optimization ladder: each rung's check can fail, device gates say why a rung is skipped, and the
command line behaves (help, bad arguments exit 2 in one line, a quick run writes a record, --compare)."""

import argparse
import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from accelbook import ladder, pairs
from accelbook.data import Data
from accelbook.ladder import FASTEST, RUNGS, keep, parse_rungs
from accelbook.recipes import (
    Recipe,
    Result,
    bf16_supported,
    check_change,
    make_loader,
    steps_for,
    train_recipe,
    unsupported,
)
from bookfacts import ROOT

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
    assert result.steps == len(data.train_idx) // 256  # full batches only
    assert 0 < result.warmup_s < result.wall_s and result.steady_images_per_s > 0
    assert result.test_accuracy > 0.5 and result.val_accuracy is not None and result.energy_j is None
    assert len(result.losses) == 3 and result.losses[-1] < result.losses[0]


def test_keep_rule():
    assert keep(100.0, 0.95, None, None)                    # the baseline
    assert keep(10.0, 0.9905, 100.0, 0.9911)                # faster, still on target
    assert keep(10.0, 0.9895, 100.0, 0.9900)                # faster, within the slack of the base
    assert keep(10.0, 0.9880, 100.0, 0.9911)                # faster, on the bar (the target less the slack)
    assert not keep(10.0, 0.9875, 100.0, 0.9880, base_acc=0.9911)  # within the slack of the best, not of the bar
    assert keep(10.0, 0.9875, 100.0, 0.9880, base_acc=0.9870)   # a weak baseline lowers the bar
    assert not keep(10.0, 0.9800, 100.0, 0.9911)            # faster but worse
    assert not keep(120.0, 0.9950, 100.0, 0.9911)           # better but slower
    assert keep(10.0, 0.9905, 100.0, 0.9911, "faster")      # faster in every paired repeat too
    assert not keep(10.0, 0.9905, 100.0, 0.9911, "within the noise")  # one fast run is not enough
    assert not keep(10.0, 0.9905, 100.0, 0.9911, "slower")


def test_the_pairs_decide_a_same_training_rung():
    # one full run minutes after another is the machine's drift as much as the change: the pairs decide
    assert keep(120.0, 0.9905, 100.0, 0.9911, "faster")
    assert not keep(90.0, 0.9905, 100.0, 0.9911, "within the noise")
    assert not keep(120.0, 0.9800, 100.0, 0.9911, "faster")  # faster, below the bar
    # a one-time cost (compilation, graph capture, autotuning) is outside the pairs: the full run shows it
    assert not keep(120.0, 0.9905, 100.0, 0.9911, "faster", pays_once=True)
    assert keep(90.0, 0.9905, 100.0, 0.9911, "faster", pays_once=True)
    assert keep(90.0, 0.9905, 100.0, 0.9911, pays_once=True)  # no pairs: the wall time decides
    assert not keep(90.0, 0.9905, 100.0, 0.9911, "within the noise", pays_once=True)
    pays = {r.name for r in RUNGS if ladder.pays_once(r.changes)}
    assert pays == {"cudnn.benchmark", "torch.compile", "CUDA graphs"}
    assert ladder.pays_once({"compile": ["default", ""], "cuda_graphs": [False, True]})  # a record's changes


def test_a_paired_run_is_timed_for_at_least_a_second(data):
    """0.2 epoch of a GPU's rate is milliseconds: the window grows until MIN_STEADY_S is timed."""
    recipe = Recipe(loader="device", batch_size=256)
    images = len(data.train_index(recipe.train_images))
    assert ladder.repeat_epochs(recipe, data) == pytest.approx(max(0.2, 4 / (images // 256)))
    assert ladder.repeat_epochs(recipe, data, rate=10.0) == ladder.repeat_epochs(recipe, data)  # slow: 0.2 epoch
    fast = ladder.repeat_epochs(recipe, data, rate=200_000.0)
    steps = steps_for(replace(recipe, epochs=fast), images // 256)  # as train_recipe counts them
    warm = min(max(1, steps // 10), 20)  # and the warm-up it leaves out
    assert (steps - warm) * 256 / 200_000.0 >= ladder.MIN_STEADY_S


def test_paired_repeats_time_both_recipes_in_turn_and_decide_the_rung(data):
    before = Recipe(loader="device")
    rates = ladder.paired_rates(before, replace(before, channels_last=True), CPU, data, repeats=2)
    assert [len(r) for r in rates] == [2, 2] and all(x > 0 for r in rates for x in r)
    layout = next(i for i, r in enumerate(RUNGS) if r.name == "channels_last")
    rows = ladder.climb(CPU, data, rungs=[1, 2, layout], epochs_scale=0.05, log=lambda *a: None, repeats=2)
    first, schedule, paired = rows
    assert first.repeats is None and schedule.repeats is None  # the baseline, and a change of the recipe
    assert len(paired.repeats["ratios"]) == 2 and paired.summary()["repeats"] == paired.repeats
    assert paired.repeats["verdict"] in ("faster", "slower", "within the noise")
    assert not paired.kept or paired.repeats["verdict"] == "faster"


def test_rung_lists():
    assert parse_rungs("0,2,4-6") == [0, 2, 4, 5, 6]
    with pytest.raises(argparse.ArgumentTypeError, match=f"rungs go from 0 to {len(RUNGS) - 1}"):
        parse_rungs(f"0-{len(RUNGS)}")
    with pytest.raises(argparse.ArgumentTypeError, match="bad rung list"):
        parse_rungs("1,two")
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
    first, second = rec["rungs"][0], rec["rungs"][1]
    assert first["wall_s"] > 0 and first["speedup_wall"] == 1.0
    assert second["speedup_wall"] == pytest.approx(first["wall_s"] / second["wall_s"])  # relative to rung 0
    assert second["speedup_steady"] == pytest.approx(second["steady_images_per_s"] / first["steady_images_per_s"])
    assert second["check"]["max_diff"] == 0.0
    assert rec["rungs"][2]["skipped"] == "skipped: needs CUDA"  # cudnn.benchmark
    assert len(second["repeats"]["ratios"]) == pairs.default_repeats("cpu") and "repeats" not in first  # the default
    assert all(Recipe.from_record(f).as_record() == f for f in rec["recipes"].values())  # round-trips
    slower = json.loads(json.dumps(rec))  # another machine: rung 1 three times slower there, rung 0 missing
    slower["rungs"] = [dict(second, wall_s=3 * second["wall_s"], steady_images_per_s=second["steady_images_per_s"] / 3)]
    slower["provenance"]["device_name"] = "another machine"
    lines = ladder.compare(rec, slower).splitlines()
    assert "theirs: another machine" in lines[1]
    assert lines[2].split()[-1] == "records" and "not in both" in lines[2]  # rung 0 is only in mine
    row = lines[3].split()
    assert float(row[-3]) == pytest.approx(3.0, abs=0.01)  # theirs / mine
    assert float(row[-5]) == pytest.approx(second["wall_s"], abs=0.01)
    other_path = json.loads(json.dumps(slower))  # there rung 1 built on a recipe with another batch
    other_path["recipes"][second["rung"]]["batch_size"] = 256
    assert "not compared" in ladder.compare(rec, other_path).splitlines()[3]
    done = _cli("--quick", "--rungs", "1", "--device", "cpu", "--no-record", "--no-progress", "--compare", str(out))
    assert done.returncode == 0 and "theirs" in done.stdout, done.stderr[-2000:]



def test_cli_quick_shakespeare_run_writes_a_valid_record_and_compares(tmp_path):
    from accelbook import lm, records

    out = tmp_path / "lm.json"
    done = _cli("--task", "shakespeare", "--quick", "--rungs", "0,5", "--device", "cpu", "--out", str(out),
                "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert rec["schema"] == records.SCHEMA and rec["kind"] == lm.RECORD_KIND == "lm-ladder"
    assert rec["task"] == "shakespeare" and rec["quick"] is True and rec["target"] == lm.TARGET
    assert rec["provenance"]["command"].startswith("python -m accelbook.ladder --task shakespeare --quick")
    first, graphs = rec["rungs"]
    assert (first["rung"], graphs["rung"]) == (lm.RUNGS[0].name, lm.RUNGS[5].name)
    assert first["check"]["ok"] and first["tokens_per_s"] > 0 and first["iters"] == round(lm.BASELINE.iters * 0.1)
    assert first["mfu"] == pytest.approx(first["tokens_per_s"] * first["flops_per_token"]
                                         / rec["peak_flops"]["fp32"]["flops"])
    assert rec["peak_flops"]["fp32"]["source"].startswith("measured here: fp32 matmul")
    assert graphs["skipped"].startswith("skipped: CUDA graphs") and not graphs["kept"]
    assert lm.RUNGS[0].name in done.stdout and "top of the ladder" in done.stdout
    again = _cli("--task", "shakespeare", "--quick", "--rungs", "0", "--device", "cpu", "--no-record", "--no-progress",
                 "--compare", str(out))
    assert again.returncode == 0 and "theirs" in again.stdout, again.stderr[-2000:]
    wrong = _cli("--task", "shakespeare", "--rungs", "0", "--device", "cpu", "--compare",
                 str(next((ROOT / "results").glob("ladder-*.json"))))
    assert wrong.returncode == 2 and "is not a lm-ladder record (kind 'ladder')" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    many = _cli("--task", "shakespeare", "--rungs", "7")
    assert many.returncode == 2 and f"rungs go from 0 to {len(lm.RUNGS) - 1}" in many.stderr


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


def test_the_fastest_recipe_is_reached_by_the_ladders_rungs():
    skipped = {"cudnn.benchmark", "TF32 matmuls", "fused Adam", "torch.compile", "CUDA graphs"}
    recipe = ARTICLE_RECIPE = Recipe()
    for rung in RUNGS[1:]:
        if rung.name not in skipped:
            recipe = replace(recipe, **rung.changes)
    assert ARTICLE_RECIPE == ladder.ARTICLE
    assert replace(recipe, train_images="all") == FASTEST


def test_each_rung_changes_one_thing():
    """One knob per rung, but the one-cycle schedule (with its peak) and CUDA graphs (with its compile mode)."""
    several = {r.name: set(r.changes) for r in RUNGS if len(r.changes) > 1}
    assert several == {"one-cycle schedule": {"schedule", "lr"}, "CUDA graphs": {"compile", "cuda_graphs"}}
    assert [r.name for r in RUNGS if ladder.same_cost(r.changes)] == ["one-cycle schedule", "Adam betas (0.7, 0.9)"]
    epochs = [r.name for r in RUNGS if "epochs" in r.changes]
    assert epochs == ["2 epochs", "1.5 epochs"]
    names = [r.name for r in RUNGS]  # the schedule is judged on the short run, where super-convergence pays
    assert names.index("2 epochs") < names.index("one-cycle schedule") < names.index("batch 256")


def test_the_slack_does_not_add_up_down_the_ladder(monkeypatch):
    """Each faster rung loses 0.15 points: within the slack of the rung before, but the second falls below the
    bar (the target less the slack), which stays where rung 0 set it."""
    runs = iter([_fake_run(val=0.9900, test=0.99, wall=100.0), _fake_run(val=0.9885, test=0.99, wall=50.0),
                 _fake_run(val=0.9870, test=0.99, wall=40.0)])
    monkeypatch.setattr(ladder, "check_change", lambda *a, **k: {"kind": "recipe", "ok": True, "max_diff": 0.0})
    monkeypatch.setattr(ladder, "train_recipe", lambda *a, **k: next(runs))
    shorter = next(i for i, r in enumerate(RUNGS) if r.name == "2 epochs")
    rows = ladder.climb(CPU, None, rungs=[0, 1, shorter], log=lambda *a: None)
    assert [r.kept for r in rows] == [True, True, False]
    assert ladder.bar(0.9904) == pytest.approx(0.988) and ladder.bar(0.985) == pytest.approx(0.983)


def test_climb_lets_the_pairs_decide_except_for_a_one_time_cost(monkeypatch):
    """channels_last: faster in every pair, slower in its one full run: kept. torch.compile: the same, but its
    compilation is outside the pairs, so its slower full run counts: not kept. The record names the rule."""
    runs = iter([_fake_run(val=0.990, test=0.99, wall=100.0), _fake_run(val=0.990, test=0.99, wall=120.0),
                 _fake_run(val=0.990, test=0.99, wall=130.0)])
    monkeypatch.setattr(ladder, "check_change", lambda *a, **k: {"kind": "fp32", "ok": True, "max_diff": 0.0})
    monkeypatch.setattr(ladder, "train_recipe", lambda *a, **k: next(runs))
    monkeypatch.setattr(ladder, "paired_rates", lambda *a, **k: ([1.0, 1.0], [2.0, 2.0]))
    layout, compiled = (next(i for i, r in enumerate(RUNGS) if r.name == n) for n in ("channels_last", "torch.compile"))
    rows = ladder.climb(CPU, None, rungs=[0, layout, compiled], log=lambda *a: None, repeats=2)
    assert [r.kept for r in rows] == [True, True, False]
    assert [r.repeats["verdict"] for r in rows[1:]] == ["faster", "faster"]
    assert ladder.record(rows, CPU, [], quick=True)["keep_rule"] == ladder.KEEP_RULE


def test_a_same_cost_rung_is_kept_on_accuracy_alone(monkeypatch):
    betas = next(i for i, r in enumerate(RUNGS) if r.name == "Adam betas (0.7, 0.9)")
    runs = iter([_fake_run(val=0.985, test=0.985, wall=100.0), _fake_run(val=0.988, test=0.988, wall=101.0),
                 _fake_run(val=0.980, test=0.980, wall=90.0)])
    monkeypatch.setattr(ladder, "check_change", lambda *a, **k: {"kind": "recipe", "ok": True, "max_diff": 0.0})
    monkeypatch.setattr(ladder, "train_recipe", lambda *a, **k: next(runs))
    rows = ladder.climb(CPU, None, rungs=[0, betas, betas + 1], log=lambda *a: None)
    assert [r.kept for r in rows] == [True, True, False]  # more accurate though 1 s slower; then 1.5 epochs falls short
    assert keep(200.0, 0.99, 100.0, 0.98, same_cost=True) and not keep(50.0, 0.98, 100.0, 0.98, same_cost=True)
    assert not keep(100.0, 0.9815, 100.0, 0.98, same_cost=True)  # a gain inside the slack is one seed's luck
    assert ladder.same_cost({"betas": (0.9, 0.999)}) and not ladder.same_cost({"betas": 1, "epochs": 2})
    assert not ladder.same_cost({})


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


class CudaScalarDivision(torch.overrides.TorchFunctionMode):
    """CUDA's arithmetic for a float tensor divided by a Python number: a multiply by the float32 reciprocal.

    ATen's div_true_kernel_cuda computes `a * (1 / b)` when b is a CPU scalar ("may lose one bit of
    precision compared to computing the division"); the CPU divides. Inside `host()` the CPU's division runs.
    """

    DIVISIONS = {torch.Tensor.div, torch.Tensor.div_, torch.div, torch.true_divide, torch.Tensor.true_divide,
                 torch.Tensor.true_divide_, torch.Tensor.__truediv__, torch.Tensor.__itruediv__}
    INPLACE = {torch.Tensor.div_, torch.Tensor.true_divide_, torch.Tensor.__itruediv__}

    def __init__(self):
        super().__init__()
        self.on_host = 0

    def host(self, fn, *args):
        """Call fn(*args) as the host computes it (true division): a DataLoader's per-image work."""
        self.on_host += 1
        try:
            return fn(*args)
        finally:
            self.on_host -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in self.DIVISIONS and not self.on_host and len(args) == 2 and isinstance(args[1], (int, float))
                and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float32 and not kwargs):
            inverse = (torch.ones((), dtype=torch.float32) / torch.tensor(args[1], dtype=torch.float32)).item()
            return args[0].mul_(inverse) if func in self.INPLACE else args[0].mul(inverse)
        return func(*args, **kwargs)


def test_the_data_path_check_holds_under_cudas_scalar_division(data, monkeypatch):
    from torchvision.datasets import MNIST

    mode = CudaScalarDivision()
    pixels = torch.arange(256, dtype=torch.float32)
    with mode:
        emulated = pixels / 255
    assert (emulated != pixels / 255).any()  # the emulation differs from true division for some pixel values
    real = MNIST.__getitem__
    monkeypatch.setattr(MNIST, "__getitem__", lambda self, i: mode.host(real, self, i))
    first = data.train_idx[:256]
    with mode:  # the batches the exact check feeds both recipes must be the same numbers, bit for bit
        batches = [next(iter(make_loader(Recipe(loader=path), data, CPU, seed=0, index=first, shuffle=False)))
                   for path in ("dataloader", "device")]
        result = check_change(Recipe(), Recipe(loader="device"), "exact", CPU, data, steps=3)
    (x_loader, y_loader), (x_device, y_device) = batches
    assert torch.equal(y_loader, y_device) and torch.equal(x_loader, x_device)
    assert result["ok"] and result["max_diff"] == 0.0, result


@pytest.mark.parametrize("loader", ["dataloader", "device"])
def test_the_training_loader_yields_only_full_batches(data, loader):
    assert len(data.train_idx) % 256  # this subset has a partial last batch to drop
    batches = make_loader(Recipe(loader=loader, batch_size=256), data, CPU, seed=0)
    sizes = [len(labels) for _, labels in batches]
    assert sizes == [256] * (len(data.train_idx) // 256) and len(batches) == len(sizes)


def test_a_compiled_rung_pays_its_compilation_in_the_timed_run(data, monkeypatch):
    from torch._dynamo.utils import counters

    compile_ = torch.compile  # Dynamo's tracing and caches as in the ladder; the eager backend keeps the test fast
    monkeypatch.setattr(torch, "compile", lambda model, mode=None, **kw: compile_(model, backend="eager"))
    compiled = Recipe(model="small", loader="device", batch_size=256, epochs=0.5, compile="default")
    check_change(replace(compiled, compile=""), compiled, "fp32", CPU, data, steps=2)  # compiles SmallNet first
    before = counters["stats"]["unique_graphs"]
    result = train_recipe(compiled, CPU, data, seed=0)
    assert result.steps < len(data.train_idx) // 256  # no partial batch: a recompilation could not explain it
    assert counters["stats"]["unique_graphs"] > before


def _fake_run(val: float, test: float, wall: float) -> Result:
    return Result(wall_s=wall, warmup_s=0.1, steady_images_per_s=1000.0, epoch_s=1.0, steps=10,
                  test_accuracy=test, val_accuracy=val)


def test_keep_decides_on_validation_accuracy(monkeypatch):
    # rung 1 is faster; its validation accuracy holds while its test accuracy drops: validation must decide
    runs = iter([_fake_run(val=0.990, test=0.990, wall=100.0), _fake_run(val=0.991, test=0.900, wall=50.0),
                 _fake_run(val=0.900, test=0.995, wall=40.0)])
    monkeypatch.setattr(ladder, "check_change", lambda *a, **k: {"kind": "exact", "ok": True, "max_diff": 0.0})
    monkeypatch.setattr(ladder, "train_recipe", lambda *a, **k: next(runs))
    shorter = next(i for i, r in enumerate(RUNGS) if r.name == "2 epochs")  # a rung judged on time and accuracy
    rows = ladder.climb(CPU, None, rungs=[0, 1, shorter], log=lambda *a: None)
    assert [r.kept for r in rows] == [True, True, False] and not ladder.same_cost(RUNGS[shorter].changes)
    rec = ladder.record(rows, CPU, [], quick=True)
    assert "test_accuracy" not in rec["rungs"][1] and rec["rungs"][1]["val_accuracy"] == 0.991
    assert rec["top"]["rung"] == RUNGS[1].name and rec["top"]["test_accuracy"] == 0.900  # reported once


def test_backend_settings_start_from_pytorchs_defaults_and_let_compile_read_tf32():
    """Rungs run under PyTorch's defaults (cuDNN TF32 on, matmuls full precision); with TF32 on, the matmul
    precision Inductor reads stays readable (setting only cuda.matmul.fp32_precision makes it raise)."""
    script = """
import torch
from accelbook.recipes import Recipe, backend_settings
b = torch.backends
names = [(b.cuda.matmul, "fp32_precision"), (b.mkldnn.matmul, "fp32_precision"), (b.cudnn.conv, "fp32_precision")]
before = [getattr(o, n) for o, n in names]
b.cudnn.conv.fp32_precision = "ieee"  # whatever the process set before, the ladder starts from the defaults
with backend_settings(Recipe()):
    assert b.cudnn.conv.fp32_precision == "tf32" and torch.get_float32_matmul_precision() == "highest"
    assert b.cudnn.allow_tf32 and not b.cuda.matmul.allow_tf32  # the legacy flags stay readable (libraries read them)
with backend_settings(Recipe(tf32=True)):
    assert b.cudnn.conv.fp32_precision == "tf32" and b.cuda.matmul.fp32_precision == "tf32"
    assert torch.get_float32_matmul_precision() == "high"
    assert b.cudnn.allow_tf32 and b.cuda.matmul.allow_tf32
assert b.cudnn.conv.fp32_precision == "ieee"
b.cudnn.conv.fp32_precision = before[2]
assert [getattr(o, n) for o, n in names] == before, [getattr(o, n) for o, n in names]
print("ok")
"""
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("this torch has only the allow_tf32 flags")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-1500:]


def test_the_race_warms_up_untimed_and_runs_each_seed(data):
    runs = ladder.race(CPU, data, seeds=[0])
    assert {k: len(v) for k, v in runs.items()} == {"anchor (re-implemented)": 1, "book's fastest": 1}
    assert all(r["wall_s"] > 0 and 0 <= r["test_accuracy"] <= 1 for v in runs.values() for r in v)


def test_the_fp16_check_starts_from_a_settled_loss_scale(data, monkeypatch):
    """GradScaler skips the steps whose scaled gradients overflow while its scale settles; the check must not
    read those skipped steps as a difference. The fp16 path runs here on the CPU (autocast + GradScaler), with a
    starting scale so high that the first steps would all overflow."""
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, **kw: scaler(device, init_scale=2.0**40))
    before = Recipe(model="small", loader="device", batch_size=64)
    result = check_change(before, replace(before, precision="fp16"), "fp16", CPU, data, steps=3)
    assert result["ok"] and result["max_diff"] > 0, result


def test_the_exact_check_runs_deterministic_algorithms_and_restores_the_flags():
    from accelbook.recipes import deterministic

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before


def test_a_recipe_comes_back_whole_from_its_record():
    """A record keeps each rung's recipe as JSON; `Recipe.from_record` gives back the recipe that ran."""
    ran = replace(FASTEST, betas=(0.7, 0.9), epochs=1.5)
    assert ran.as_record()["betas"] == [0.7, 0.9]  # JSON's own form, before any dump
    kept = json.loads(json.dumps(ran.as_record()))  # what a ladder record holds
    back = Recipe.from_record(kept)
    assert back == ran and isinstance(back.betas, tuple) and hash(back) == hash(ran)
    with pytest.raises(ValueError, match="does not know: warmup"):
        Recipe.from_record({**kept, "warmup": 3})


def test_the_tf32_note_gives_the_linear_layers_share_of_the_model_it_runs_on():
    """The TF32 rung's note names the one linear layer and its share of the multiply-adds of the
    model the ladder trains at that rung, and its "after a kept mixed-precision rung" is in order."""
    from accelbook.recipes import MODELS
    from accelbook.roofline import layer_costs

    tf32 = next(i for i, r in enumerate(RUNGS) if r.changes == {"tf32": True})
    precision = next(i for i, r in enumerate(RUNGS) if "precision" in r.changes)
    name = next((r.changes["model"] for r in reversed(RUNGS[:tf32]) if "model" in r.changes),
                ladder.ARTICLE.model)
    model = MODELS[name]()
    flops = {c.name: c.flops for c in layer_costs(model, torch.zeros(1, 1, 28, 28))}
    ((fc_name, fc),) = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    share = flops[fc_name] / sum(flops.values())  # FLOPs are 2 per multiply-add, so the share is the same
    note = RUNGS[tf32].why
    assert precision < tf32, "the note speaks of a mixed-precision rung kept before it"
    assert f"one linear layer ({fc.in_features} → {fc.out_features})" in note
    assert f"about {share:.2%} of its multiply-adds" in note
