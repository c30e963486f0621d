"""Data-parallel training with DistributedDataParallel, launched by torchrun (chapter 7, "Scaling out").

    torchrun --standalone --nproc_per_node=2 -m accelbook.ddp --epochs 1
    torchrun --standalone --nproc_per_node=2 -m accelbook.ddp --global-batch 512 --optimizer sgd --lr 0.01 --warmup 50
    torchrun --standalone --nproc_per_node=2 -m accelbook.ddp --measure 20 --out ddp.json --epochs 0
    python -m accelbook.ddp --epochs 1        # one process, no torchrun needed

Every process trains a replica of the model on its own shard of each global batch
(`DistributedSampler`); after `backward` DDP averages the gradients of all replicas (all-reduce), so
every replica takes the same optimizer step. Rank 0 alone prints, writes the checkpoint (atomically) and
the JSON result. gloo on CPU, NCCL on CUDA (`--backend` overrides). `--measure K` times K steps with
and K without gradient synchronization (`no_sync`), and all-reduce alone over a range of message sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .bench import synchronize
from .cli import InvalidArgument, OneLineParser, UserError, fail, number, prog

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
OPTIMIZERS = ("adam", "sgd")
SCALE_RULES = ("linear", "sqrt", "none")


def build_parser() -> OneLineParser:
    """The command line of `python -m accelbook.ddp` (also run under torchrun)."""
    p = OneLineParser(prog=prog("ddp"), description=(
        "Train the corrected CNN data-parallel with DistributedDataParallel. Launch with "
        "`torchrun --standalone --nproc_per_node=N -m accelbook.ddp ...` (or plain python for one process)."))
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available); each process "
                   "uses cuda:LOCAL_RANK")
    p.add_argument("--backend", default="auto", help="gloo, nccl or auto (gloo on CPU, NCCL on CUDA)")
    p.add_argument("--epochs", type=number(float, 0), default=1.0, help="training epochs (fractions allowed; "
                   "0: none)")
    p.add_argument("--global-batch", type=int, default=128, help="images per optimizer step, all processes "
                   "together; must be a multiple of the number of processes: the default 128 suits 1, 2, 4 or 8, "
                   "840 suits any number from 1 to 8")
    p.add_argument("--base-batch", type=number(int, 1), default=64, help="the batch at which --lr was tuned "
                   "(default 64)")
    p.add_argument("--lr", type=number(float, 0, strict=True), default=1e-3, help="learning rate at --base-batch "
                   "(default 1e-3)")
    p.add_argument("--scale", choices=SCALE_RULES, default=None, help="how lr grows with the global batch: "
                   "linear (Goyal et al. 2017, SGD), sqrt (Adam), none; default linear for sgd, sqrt for adam")
    p.add_argument("--warmup", type=number(int, 0), default=0, help="steps of linear learning-rate warm-up "
                   "(default 0)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="adam (default) or sgd (momentum 0.9)")
    p.add_argument("--batchnorm", action="store_true", help="the article's section 5.2 BatchNorm variant")
    p.add_argument("--sync-bn", action="store_true", help="with --batchnorm: SyncBatchNorm, statistics over "
                   "the global batch (CUDA only)")
    p.add_argument("--limit", type=number(int, 1), default=None, help="use the first N training and test images "
                   "(smoke runs)")
    p.add_argument("--threads", type=number(int, 1), default=None, help="CPU threads per process (default: cores "
                   "/ processes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialization and the shuffling")
    p.add_argument("--measure", type=number(int, 0), default=0, metavar="K", help="time K steps with and K "
                   "without gradient all-reduce, and all-reduce alone (default 0: skip)")
    p.add_argument("--checkpoint", default=None, help="write the trained weights here (rank 0, atomically)")
    p.add_argument("--out", default=None, help="write the run's result as JSON here (rank 0)")
    p.add_argument("--fail-on-rank", type=int, default=None, help=argparse.SUPPRESS)  # tests: a worker that raises
    return p


def world_from_env(env: dict | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) when not launched by torchrun."""
    env = os.environ if env is None else env
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def choose_backend(device_type: str, asked: str = "auto") -> str:
    """gloo for CPU and NCCL for CUDA, or what was asked; NCCL on a CPU is refused with a reason."""
    asked = asked.lower()
    if asked == "auto":
        if device_type not in BACKENDS:
            raise InvalidArgument(f"no distributed backend for device {device_type!r}: use cpu or cuda")
        return BACKENDS[device_type]
    if asked not in ("gloo", "nccl"):
        raise InvalidArgument(f"unknown backend {asked!r}: use gloo, nccl or auto")
    if asked == "nccl" and device_type != "cuda":
        raise InvalidArgument("the nccl backend needs CUDA tensors: use --backend gloo on a CPU")
    return asked


def per_rank_batch(global_batch: int, world: int) -> int:
    """Each process's share of the global batch; a global batch that does not divide evenly is refused, with the
    nearest ones that do."""
    if global_batch < world or global_batch % world:
        below = global_batch // world * world
        near = " or ".join(str(b) for b in (below, below + world) if b >= world)
        raise InvalidArgument(f"--global-batch {global_batch} does not divide among {world} processes: use a multiple "
                              f"of {world}: {near} (840 divides among any number from 1 to 8)")
    return global_batch // world


def scaled_lr(lr: float, global_batch: int, base_batch: int, rule: str) -> float:
    """The learning rate for `global_batch`, from `lr` tuned at `base_batch`: linear, sqrt or no scaling."""
    k = global_batch / base_batch
    if rule == "linear":
        return lr * k
    if rule == "sqrt":
        return lr * math.sqrt(k)
    if rule == "none":
        return lr
    raise InvalidArgument(f"unknown scaling rule {rule!r}: use one of {SCALE_RULES}")


def warmup_factor(step: int, warmup: int) -> float:
    """Multiplier of the learning rate at `step` (0-based): a linear ramp from 1/warmup to 1, then 1."""
    return 1.0 if warmup <= 0 or step >= warmup else (step + 1) / warmup


def shard(n: int, rank: int, world: int) -> torch.Tensor:
    """Positions rank, rank + world, ... of range(n): every item exactly once across the ranks (evaluation)."""
    return torch.arange(rank, n, world)


def build_model(batchnorm: bool, sync_bn: bool, device: torch.device, seed: int) -> nn.Module:
    """The corrected CNN (chapter 3), the same initial weights on every rank; SyncBatchNorm where asked."""
    from .models import ConvNet

    torch.manual_seed(seed)
    model = ConvNet(batchnorm=batchnorm)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)


def build_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Adam (betas 0.9/0.999), or SGD with momentum 0.9 as in Goyal et al. (2017)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def train_loader(images: torch.Tensor, labels: torch.Tensor, batch: int, rank: int,
                 world: int, seed: int):
    """Batches of this rank's shard: a DistributedSampler (reshuffled by set_epoch)
    feeding index batches."""
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        DistributedSampler,
        TensorDataset,
    )

    dataset = TensorDataset(images, labels)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    batches = BatchSampler(sampler, batch, drop_last=True)
    loader = DataLoader(dataset, sampler=batches, batch_size=None)
    return loader, sampler


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
              schedule=None):
    """`step.make_step` on uint8 images (normalized on the device); DDP all-reduces
    the gradients in `backward`.

    The all-reduce runs bucket by bucket as gradients become ready, overlapping the
    rest of the backward pass. The step returns this rank's loss, not synchronized.
    """
    from .data import normalize
    from .step import make_step as one_step

    loss_fn = nn.CrossEntropyLoss()
    return one_step(model, optimizer, loss_fn, device, prepare=normalize,
                    schedule=schedule)


def sharded_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     device: torch.device, rank: int, world: int) -> float:
    """Test accuracy: each rank counts right answers on its shard, then one
    all-reduce sums the counts."""
    import torch.distributed as dist

    from .data import normalize
    from .step import count_correct

    index = shard(len(labels), rank, world)
    batches = ((images[i], labels[i]) for i in index.split(1000))
    counts = count_correct(model, batches, device, prepare=normalize)
    count = torch.tensor(counts["count"], device=device)
    total = torch.stack([counts["correct"], count])
    dist.all_reduce(total)
    model.train()
    return total[0].item() / total[1].item()


def time_steps(model, step, batches, k: int, synced: bool, device: torch.device) -> list[float]:
    """Seconds of `k` steps, each started together on all ranks; without all-reduce when not `synced`."""
    import torch.distributed as dist

    times = []
    for _ in range(k):
        images, labels = next(batches)
        dist.barrier()
        synchronize(device)
        start = time.perf_counter()
        with contextlib.nullcontext() if synced else model.no_sync():
            step(images, labels)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_allreduce(numels: list[int], device: torch.device, repeats: int = 10) -> list[dict]:
    """Median seconds of one all-reduce of a float32 tensor of each size (after two warm-ups), with the world size."""
    import torch.distributed as dist

    rows = []
    for n in numels:
        x = torch.ones(n, device=device)
        times = []
        for i in range(repeats + 2):
            dist.barrier()
            synchronize(device)
            start = time.perf_counter()
            dist.all_reduce(x)
            synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        rows.append({"bytes": 4 * n, "seconds": statistics.median(times), "ranks": dist.get_world_size()})
    return rows


def gather(value: float) -> list[float]:
    """Every rank's `value`, gathered on all ranks (index = rank)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def checksum(model: nn.Module) -> float:
    """The sum of all of a replica's weights (float64): equal on every rank when the replicas agree."""
    return sum(p.detach().double().sum().item() for p in model.parameters())


def torchrun_command(nproc: int, *args: str) -> list[str]:
    """`torchrun --standalone --nproc_per_node=nproc -m accelbook.ddp args` with this Python (a free port each time)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "accelbook.ddp", *args]


def log(rank: int, *parts) -> None:
    """Print on rank 0 only, flushed (torchrun interleaves the processes' output)."""
    if rank == 0:
        print(*parts, flush=True)


@dataclass
class Plan:
    """What the command line asks of this process: its device, backend, batch, learning rate and threads."""

    device: torch.device
    backend: str
    batch: int
    rule: str
    lr: float
    threads: int


def plan(args, world: int, local_rank: int) -> Plan:
    """Check the arguments against this process and derive its settings; a ValueError says what to change."""
    from .device import process_device

    device = process_device(args.device, local_rank)
    backend = choose_backend(device.type, args.backend)
    if args.sync_bn and not args.batchnorm:
        raise InvalidArgument("--sync-bn converts BatchNorm layers: add --batchnorm")
    if args.sync_bn and device.type != "cuda":
        raise InvalidArgument("SyncBatchNorm needs CUDA tensors (torch refuses CPU ones): drop --sync-bn on a CPU")
    rule = args.scale or ("linear" if args.optimizer == "sgd" else "sqrt")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return Plan(device, backend, per_rank_batch(args.global_batch, world), rule,
                scaled_lr(args.lr, args.global_batch, args.base_batch, rule),
                args.threads or max(1, (os.cpu_count() or 1) // local_world))


def load_mnist(limit: int | None) -> tuple[torch.Tensor, ...]:
    """Training and test images and labels (the first `limit` of each); never downloads: ranks must not race."""
    from .data import mnist_tensors

    images, labels = mnist_tensors(train=True, download=False)
    test_images, test_labels = mnist_tensors(train=False, download=False)
    if limit:
        images, labels, test_images, test_labels = (t[:limit] for t in (images, labels, test_images, test_labels))
    return images, labels, test_images, test_labels


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup: int):
    """A LambdaLR stepped after each optimizer step: step i runs at lr x warmup_factor(i, warmup)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: warmup_factor(i, warmup))


def failing_on(step, rank: int, fail_rank: int | None, at: int = 1):
    """`step`, or on rank `fail_rank` a step that raises at call `at` (tests: a worker that fails mid-run)."""
    if fail_rank != rank:
        return step
    calls = [0]

    def failing(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if calls[0] == at:
            raise RuntimeError(f"rank {rank} fails on purpose at step {at} (--fail-on-rank)")
        calls[0] += 1
        return step(images, labels)

    return failing


def train_epochs(step, loader, sampler, steps: int, evaluate_epoch, device: torch.device, rank: int) -> list[dict]:
    """Run `steps` steps, epoch after epoch; after each, the mean loss over all ranks and `evaluate_epoch()`."""
    import torch.distributed as dist

    history, done, epoch, start = [], 0, 0, time.perf_counter()
    while done < steps:
        sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        total, count = torch.zeros((), device=device), 0
        for images, labels in itertools.islice(loader, steps - done):
            total += step(images, labels)
            count += 1
        done, epoch = done + count, epoch + 1
        sums = torch.stack([total, torch.tensor(float(count), device=device)])
        dist.all_reduce(sums)  # the epoch's mean loss over every rank's batches
        accuracy = evaluate_epoch()
        history.append({"epoch": epoch, "steps": done, "train_loss": (sums[0] / sums[1].clamp(min=1)).item(),
                        "test_accuracy": accuracy, "seconds": time.perf_counter() - start})
        log(rank, f"epoch {epoch}: {done} steps, loss {history[-1]['train_loss']:.4f}, "
                  f"test accuracy {100 * accuracy:.2f}%, {history[-1]['seconds']:.1f} s")
    return history


def train_process(args, rank: int, world: int, local_rank: int) -> dict:
    """Set up the process group, train, evaluate, measure; return rank 0's result (other ranks: {})."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    p = plan(args, world, local_rank)
    if p.device.type == "cpu":
        torch.set_num_threads(p.threads)
    if not dist.is_initialized():
        dist.init_process_group(p.backend, device_id=p.device if p.device.type == "cuda" else None)
    images, labels, test_images, test_labels = load_mnist(args.limit)
    loader, sampler = train_loader(images, labels, p.batch, rank, world, args.seed)
    if len(loader) == 0:
        raise InvalidArgument(f"{len(labels)} images give no full global batch of {args.global_batch}")
    model = DDP(build_model(args.batchnorm, args.sync_bn, p.device, args.seed),
                device_ids=[local_rank] if p.device.type == "cuda" else None)
    optimizer = build_optimizer(args.optimizer, model.parameters(), p.lr)
    step = make_step(model, optimizer, p.device, schedule=warmup_schedule(optimizer, args.warmup))
    log(rank, f"{world} process(es) x {p.backend} on {p.device.type}"
              f"{f', {p.threads} thread(s) each' if p.device.type == 'cpu' else ''}; global batch "
              f"{args.global_batch} = {world} x {p.batch}\n{args.optimizer} lr {p.lr:.4g} ({p.rule} rule from "
              f"{args.lr:g} at batch {args.base_batch}); warm-up {args.warmup} steps")
    steps = int(args.epochs * len(loader))
    history = train_epochs(failing_on(step, rank, args.fail_on_rank), loader, sampler, steps,
                           partial(sharded_accuracy, model.module, test_images, test_labels, p.device, rank, world),
                           p.device, rank)
    result = {"world": world, "backend": p.backend, "threads": p.threads if p.device.type == "cpu" else None,
              "global_batch": args.global_batch, "per_rank_batch": p.batch, "optimizer": args.optimizer,
              "lr": p.lr, "scale_rule": p.rule, "warmup": args.warmup, "batchnorm": args.batchnorm,
              "sync_bn": args.sync_bn, "steps": steps, "history": history,
              "parameters": sum(q.numel() for q in model.parameters()),
              "replica_checksums": gather(checksum(model)),
              "running_means": gather(_first_running_mean(model))}  # per rank: evaluation uses each rank's own
    if args.measure:
        result["measure"] = measure(model, step, loader, sampler, args.measure, p.device)
        m = result["measure"]
        log(rank, f"step with all-reduce {1e3 * max(m['synced_s']):.2f} ms, without {1e3 * max(m['no_sync_s']):.2f}"
                  f" ms (slowest rank's median of {args.measure})")
    if args.checkpoint and rank == 0:
        save_trained(model.module, result, args.checkpoint)
    result["provenance"] = provenance_for(p.device, world)
    del model, optimizer, step  # release DDP's reducer before the process group goes (clean exit, see DESIGN)
    return result if rank == 0 else {}


def save_trained(model: nn.Module, result: dict, path: str) -> None:
    """Write the trained weights and the run's result (without timings of --measure) atomically to `path`."""
    from .checkpoint import save_checkpoint

    save_checkpoint({"model": model.state_dict(), "result": {k: v for k, v in result.items() if k != "measure"}},
                    path)
    print(f"checkpoint written: {Path(path).name}", flush=True)


def provenance_for(device: torch.device, world: int) -> dict:
    """The records' provenance of this run, its command with the real number of processes."""
    from .records import provenance

    found = provenance(device, sys.argv[1:], kind="ddp")
    found["command"] = found["command"].replace("<N>", str(world))
    return found


def _first_running_mean(model: nn.Module) -> list[float] | None:
    """The first BatchNorm layer's running mean (first 4 channels), or None without BatchNorm."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return [round(v, 6) for v in module.running_mean[:4].tolist()]
    return None


def measure(model, step, loader, sampler, k: int, device: torch.device) -> dict:
    """Per-rank median step time with and without all-reduce, and all-reduce alone for a range of sizes."""
    sampler.set_epoch(10_000)
    batches = itertools.cycle(list(itertools.islice(iter(loader), k + 2)))
    time_steps(model, step, batches, 2, True, device)  # warm-up
    synced = gather(statistics.median(time_steps(model, step, batches, k, True, device)))
    alone = gather(statistics.median(time_steps(model, step, batches, k, False, device)))
    params = sum(p.numel() for p in model.parameters())
    sizes = sorted({2 ** e for e in range(8, 23, 2)} | {params})
    return {"synced_s": synced, "no_sync_s": alone, "gradient_bytes": 4 * params,
            "allreduce": time_allreduce(sizes, device)}


def main(argv: list[str] | None = None) -> int:
    """Parse, run under the process group, write rank 0's JSON, tear down cleanly; 0 on success."""
    args = build_parser().parse_args(argv)
    rank, world, local_rank = world_from_env()
    if "MASTER_ADDR" not in os.environ:  # plain `python -m accelbook.ddp`: a world of one on loopback
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    try:
        result = train_process(args, rank, world, local_rank)
    except UserError as err:  # one line, exit 2, printed once (by rank 0)
        _teardown()
        return fail(prog("ddp"), err) if rank == 0 else 2
    if result and args.out:
        from .records import save_record

        save_record({"kind": "ddp", **result}, args.out)  # the records schema, so chapter 7 can list it
    _teardown()
    return 0


def multinode_command(nnodes: int, nproc_per_node: int, endpoint: str, job_id: str = "mnist-ddp",
                      args: tuple[str, ...] = ()) -> str:
    """The torchrun line that each of `nnodes` machines runs to join one job (c10d rendezvous at `endpoint`)."""
    return " ".join([f"torchrun --nnodes={nnodes} --nproc_per_node={nproc_per_node} --rdzv-backend=c10d",
                     f"--rdzv-endpoint={endpoint} --rdzv-id={job_id} -m accelbook.ddp", *args])


def slurm_script(nodes: int, gpus_per_node: int, args: tuple[str, ...] = (), hours: int = 1) -> str:
    """A Slurm batch script: one torchrun per node, the job's first host as the rendezvous endpoint."""
    return "\n".join([
        "#!/bin/bash",
        "#SBATCH --job-name=accelbook-ddp",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1            # one torchrun per node; it starts the per-GPU workers",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --time={hours:02d}:00:00",
        "set -euo pipefail",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'export ACCELBOOK_DATA=${ACCELBOOK_DATA:-$PWD/data}   # MNIST on shared storage, read by every node',
        f'srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node={gpus_per_node} \\',
        '    --rdzv-backend=c10d --rdzv-endpoint="$head:29500" --rdzv-id="$SLURM_JOB_ID" \\',
        "    " + " ".join(["-m accelbook.ddp --device cuda", *args]),
        "",
    ])


def _teardown() -> None:
    """Collect garbage, wait for every rank, destroy the process group: the order
    that exits cleanly with gloo."""
    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    """A TCP port free on loopback right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
