"""Scaling out: the DDP script's rules, torchrun launches that start and exit cleanly every time, a failing
worker that ends the job instead of hanging it, and the ring all-reduce cost model."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from accelbook import ddp, scaling
from accelbook.checkpoint import load_checkpoint

REPEATS = int(os.environ.get("ACCELBOOK_DDP_REPEATS", "3"))  # the note reports a 10-in-a-row run
SMALL = ["--limit", "640", "--global-batch", "64", "--epochs", "1", "--threads", "1"]


def torchrun(*args: str, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=nproc -m accelbook.ddp args` (a free port each time)."""
    cmd = ddp.torchrun_command(nproc, *args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_world_comes_from_torchrun_variables_or_is_one():
    assert ddp.world_from_env({}) == (0, 1, 0)
    assert ddp.world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)


def test_backend_follows_the_device_and_refuses_nccl_on_cpu():
    assert ddp.choose_backend("cpu") == "gloo" and ddp.choose_backend("cuda") == "nccl"
    assert ddp.choose_backend("cuda", "gloo") == "gloo"
    with pytest.raises(ValueError, match="nccl backend needs CUDA"):
        ddp.choose_backend("cpu", "nccl")
    with pytest.raises(ValueError):
        ddp.choose_backend("cpu", "mpi")


def test_global_batch_must_divide_and_lr_scales_by_the_rule():
    assert ddp.per_rank_batch(128, 2) == 64
    with pytest.raises(ValueError, match="does not divide"):
        ddp.per_rank_batch(129, 2)
    assert ddp.scaled_lr(0.01, 512, 64, "linear") == pytest.approx(0.08)
    assert ddp.scaled_lr(1e-3, 256, 64, "sqrt") == pytest.approx(2e-3)
    assert ddp.scaled_lr(0.01, 512, 64, "none") == 0.01
    assert [ddp.warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ddp.warmup_factor(0, 0) == 1.0


def test_evaluation_shards_cover_every_item_once():
    parts = [ddp.shard(10, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))


def test_help_and_user_errors_are_one_line():
    help_ = subprocess.run([sys.executable, "-m", "accelbook.ddp", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--global-batch" in help_.stdout and "--fail-on-rank" not in help_.stdout
    assert "840" in " ".join(help_.stdout.split())  # the help names a global batch that divides among 1 to 8
    for args, message in [(["--epochs", "x"], "invalid"),
                          (["--epochs", "-1"], "--epochs"), (["--epochs", "nan"], "--epochs"),
                          (["--epochs", "inf"], "--epochs"), (["--base-batch", "0"], "--base-batch"),
                          (["--measure", "-2"], "--measure"), (["--limit", "-5"], "--limit"),
                          (["--warmup", "-1"], "--warmup"), (["--threads", "0"], "--threads"),
                          (["--lr", "-0.1"], "--lr"),
                          (["--sync-bn", "--batchnorm", "--device", "cpu"], "SyncBatchNorm needs CUDA"),
                          (["--global-batch", "0"], "does not divide")]:
        done = subprocess.run([sys.executable, "-m", "accelbook.ddp", *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)


def test_a_global_batch_that_does_not_divide_names_batches_that_do():
    with pytest.raises(ValueError, match="126 or 129"):
        ddp.per_rank_batch(128, 3)
    with pytest.raises(ValueError, match="use a multiple of 7: 7 "):
        ddp.per_rank_batch(2, 7)
    # as rank 0 of a world of 3 sees it (torchrun's variables), before any process group exists: one line, exit 2
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29999"}
    done = subprocess.run([sys.executable, "-m", "accelbook.ddp", "--device", "cpu"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 2 and "126 or 129" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_missing_data_is_one_line_and_no_download(tmp_path):
    env = {**os.environ, "ACCELBOOK_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "accelbook.ddp", *SMALL], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2 and "MNIST not found" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "MNIST").exists()  # nothing was downloaded


def test_torchrun_two_processes_train_and_exit_cleanly_every_time(tmp_path):
    for attempt in range(REPEATS):
        out, ckpt = tmp_path / f"run{attempt}.json", tmp_path / f"model{attempt}.pt"
        done = torchrun(*SMALL, "--out", str(out), "--checkpoint", str(ckpt))
        assert done.returncode == 0, f"launch {attempt + 1}/{REPEATS} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
        assert "terminate called" not in done.stderr
    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["backend"] == "gloo" and result["per_rank_batch"] == 32
    assert result["steps"] == 10  # 640 images / 64 per global batch
    assert 0.0 <= result["history"][-1]["test_accuracy"] <= 1.0
    assert result["provenance"]["command"].startswith("torchrun --standalone --nproc_per_node=2 -m accelbook.ddp")
    state = load_checkpoint(ckpt)
    assert set(state["model"]) >= {"conv1.weight", "fc.bias"}  # the unwrapped model's names, no "module."
    assert done.stdout.count("epoch 1:") == 1  # rank 0 alone logs
    a, b = result["replica_checksums"]
    assert a == b  # averaged gradients, same steps: the two replicas hold the same weights


def test_plain_python_runs_a_world_of_one(tmp_path):
    out = tmp_path / "one.json"
    done = subprocess.run([sys.executable, "-m", "accelbook.ddp", *SMALL, "--out", str(out)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 1 and result["per_rank_batch"] == 64 and result["lr"] == pytest.approx(1e-3)


def test_cluster_files_are_valid_shell(tmp_path):
    script = tmp_path / "ddp.sbatch"
    script.write_text(ddp.slurm_script(4, 8, ("--epochs", "3")))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "#SBATCH --nodes=4" in text and "--nproc_per_node=8" in text and "--epochs 3" in text
    line = ddp.multinode_command(2, 8, "node0:29500")
    assert "--nnodes=2" in line and "--rdzv-backend=c10d" in line and "--rdzv-endpoint=node0:29500" in line


def test_a_failing_worker_ends_the_job_with_its_error(tmp_path):
    done = torchrun(*SMALL, "--fail-on-rank", "1", timeout=120)
    assert done.returncode != 0
    assert "fails on purpose" in done.stdout + done.stderr


def test_measure_times_steps_with_and_without_allreduce(tmp_path):
    out = tmp_path / "measure.json"
    done = torchrun("--limit", "640", "--global-batch", "64", "--epochs", "0", "--threads", "1", "--measure", "3",
                    "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads(out.read_text())["measure"]
    assert len(m["synced_s"]) == len(m["no_sync_s"]) == 2 and min(m["synced_s"] + m["no_sync_s"]) > 0
    assert m["gradient_bytes"] == 4 * sum(p.numel() for p in ddp.build_model(False, False, torch.device("cpu"),
                                                                             0).parameters())
    assert {r["ranks"] for r in m["allreduce"]} == {2}  # the rows carry the world size they were measured with
    alpha, gbs = scaling.fit_ring(m["allreduce"])
    assert alpha >= 0 and gbs > 0


def test_ring_model_matches_its_formula_and_inverts():
    assert scaling.ring_allreduce_s(1e6, 1, 100) == 0.0
    # two devices: 2 steps of latency, and each sends half of 1 MB twice = 1 MB over 1 GB/s
    assert scaling.ring_allreduce_s(1e6, 2, 1.0, alpha_s=1e-5) == pytest.approx(2e-5 + 1e-3)
    with pytest.raises(ValueError):
        scaling.ring_allreduce_s(1e6, 0, 10)


def test_efficiency_falls_with_devices_and_rises_with_compute():
    comm = {n: scaling.allreduce_s(1e6, n, scaling.H100_SXM_NDR) for n in (1, 2, 8, 64, 1024)}
    e = [scaling.efficiency(1e-3, comm[n]) for n in comm]
    assert e[0] == 1.0 and all(a > b for a, b in zip(e, e[1:], strict=False))
    assert scaling.efficiency(1e-1, comm[1024]) > scaling.efficiency(1e-3, comm[1024])
    ring = scaling.ring_allreduce_s(1e6, 8, 50.0)
    assert math.isclose(scaling.step_s(1e-3, ring, overlap=1.0), 1e-3 + max(0.0, ring - 1e-3))


def _replica_bytes(mixed: bool) -> tuple[int, int]:
    """(parameters, bytes held after one Adam step) of a real ConvNet replica: weights, gradients, Adam state.

    fp32 training holds weights, gradients and Adam's two moments in fp32. Mixed precision as ZeRO counts it
    holds bf16 weights and gradients for the forward and backward pass, and fp32 master weights with Adam's
    moments for the update (the master's gradients are dropped after the step). Activations are not counted.
    """
    from accelbook.models import ConvNet

    torch.manual_seed(0)
    model = ConvNet()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    if not mixed:
        opt = torch.optim.Adam(model.parameters())
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        params, grads, master = list(model.parameters()), [p.grad for p in model.parameters()], []
    else:
        master = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
        opt = torch.optim.Adam(master)
        model = model.to(torch.bfloat16)
        torch.nn.functional.cross_entropy(model(x.bfloat16()).float(), y).backward()
        for m, p in zip(master, model.parameters(), strict=True):
            m.grad = p.grad.float()
        opt.step()
        opt.zero_grad(set_to_none=True)
        params, grads = list(model.parameters()), [p.grad for p in model.parameters()]
    state = [t for s in opt.state.values() for k, t in s.items() if k != "step"]  # exp_avg, exp_avg_sq
    held = sum(t.numel() * t.element_size() for t in [*params, *grads, *master, *state])
    return sum(p.numel() for p in params), held


@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "bf16 + fp32 master"])
def test_full_replica_memory_estimate_matches_a_real_model_and_optimizer(mixed):
    """max_params_without_sharding, given the memory a real replica holds after an Adam step, gives its size back."""
    n, held = _replica_bytes(mixed)
    assert held / n == 16  # both ways: 4 + 4 + 4 + 4, or 2 + 2 + (4 + 4 + 4)
    assert scaling.max_params_without_sharding(held / 1e9) == pytest.approx(n, rel=1e-12)
    assert scaling.max_params_without_sharding(2 * held / 1e9) == pytest.approx(2 * n, rel=1e-12)


def test_each_rank_evaluates_with_its_own_batchnorm_statistics(tmp_path):
    # DDP broadcasts rank 0's buffers before every training forward, then each rank's forward updates its own
    # running statistics with its own shard; evaluation calls the unwrapped model, so after training the ranks
    # score their test shards with statistics that differ (by their last batch), and the checkpoint holds rank 0's
    out, ckpt = tmp_path / "bn.json", tmp_path / "bn.pt"
    done = torchrun(*SMALL, "--batchnorm", "--out", str(out), "--checkpoint", str(ckpt))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    by_rank = result["running_means"]
    assert len(by_rank) == 2 and by_rank[0] != by_rank[1]
    a, b = result["replica_checksums"]
    assert a == b  # the weights agree; only the BatchNorm buffers differ
    first = next(k for k in load_checkpoint(ckpt)["model"] if k.endswith("running_mean"))
    assert load_checkpoint(ckpt)["model"][first][:4].tolist() == pytest.approx(by_rank[0], abs=1e-6)
