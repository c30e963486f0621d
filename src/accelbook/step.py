"""The one training step and the one accuracy count: every loop in the package runs these two.

`make_step` builds a step from the model, its optimizer and loss, and the knobs a recipe turns
(input preparation, autocast, a loss scaler, a schedule, a weight average, gradient accumulation and
clipping, named phases for a profiler).
`count_correct` counts right answers over batches; an evaluation divides, DDP all-reduces the counts,
an attack perturbs the batches it is given. Chapter 4 teaches the same step as an explicit loop.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def no_phase(name: str) -> AbstractContextManager:
    """A phase that records nothing (the default of `make_step`)."""
    return contextlib.nullcontext()


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
              device: torch.device, *, forward: Callable | None = None,
              prepare: Callable | None = None,
              autocast: Callable[[], AbstractContextManager] | None = None,
              scaler=None, schedule=None, average=None, accumulate: int = 1,
              clip: float | None = None,
              phase: Callable[[str], AbstractContextManager] = no_phase) -> Step:
    """A function `step(inputs, targets)`: one optimizer step on a batch; returns the
    batch's loss.

    `forward` runs the model (default `model`; e.g. its `torch.compile`d version);
    `prepare` turns the inputs, once on `device`, into what the model takes
    (normalization, channels_last); `autocast` makes the precision context (bf16/fp16);
    `scaler` is fp16's GradScaler; `schedule` steps after each optimizer step, then
    `average` (a `train.WeightAverage`) takes the new weights. `phase(name)` wraps
    "copy", "forward" (gradients reset, then the forward pass and loss), "backward" and
    "optimizer". The returned loss is the batch's, on the device, unsynchronized.

    `accumulate=k`: each call takes one of k micro-batches that make one optimizer step.
    Its loss is divided by k before the backward pass, gradients are reset before the
    first micro-batch of a group only, and the optimizer steps (scaler, schedule and
    average with it) after the last; a DistributedDataParallel model all-reduces only
    then (`no_sync` before). `clip`: the global gradient norm is clipped to `clip` just
    before the optimizer step (unscaled first: fp16).
    """
    accumulate_ok = isinstance(accumulate, int) and accumulate >= 1
    if not accumulate_ok or not (clip is None or clip > 0):
        raise ValueError("make_step needs an integer accumulate >= 1 and a clip > 0 "
                         f"(or None), got accumulate={accumulate!r}, clip={clip!r}")
    forward = model if forward is None else forward
    precision = nullcontext if autocast is None else autocast
    ddp = isinstance(model, DistributedDataParallel)
    no_sync = model.no_sync if ddp else nullcontext
    micro_batches = itertools.count()

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n = next(micro_batches)
        first, last = n % accumulate == 0, (n + 1) % accumulate == 0  # both, by default
        with phase("copy"):
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if prepare is not None:
                inputs = prepare(inputs)
        with nullcontext() if last else no_sync():
            with phase("forward"):
                if first:
                    optimizer.zero_grad(set_to_none=True)
                with precision():
                    loss = loss_fn(forward(inputs), targets)
            with phase("backward"):
                part = loss if accumulate == 1 else loss / accumulate
                (part if scaler is None else scaler.scale(part)).backward()
        if last:
            with phase("optimizer"):
                if clip is not None:
                    if scaler is not None:
                        scaler.unscale_(optimizer)  # clip the true gradients
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                if scaler is None:
                    optimizer.step()
                else:
                    scaler.step(optimizer)  # skipped if scaled gradients overflowed
                    scaler.update()
                if schedule is not None:
                    schedule.step()
                if average is not None:
                    average.update_parameters(model)
        return loss.detach()

    return step


@torch.no_grad()
def count_correct(model: Callable, batches: Iterable, device: torch.device, *, prepare: Callable | None = None,
                  autocast: Callable[[], AbstractContextManager] | None = None,
                  loss_fn: Callable | None = None) -> dict:
    """Right answers of `model` over `batches` of (inputs, targets): {"correct", "count", "loss_sum"}, on the device.

    The model is put in eval mode (and left there). Nothing is read back to the host: the caller
    divides (`accuracy`), or all-reduces first (DDP). `loss_sum` is the summed `loss_fn` (a mean per
    batch, times its size) when given, else None. Batches may be made lazily under this function's
    `no_grad`: an attack that needs gradients turns them on itself (`torch.enable_grad`).
    """
    if hasattr(model, "eval"):
        model.eval()
    precision = contextlib.nullcontext if autocast is None else autocast
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = None if loss_fn is None else torch.zeros((), device=device)
    count = 0
    for inputs, targets in batches:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if prepare is not None:
            inputs = prepare(inputs)
        with precision():
            logits = model(inputs)
        correct += (logits.argmax(1) == targets).sum()
        if loss_fn is not None:
            loss_sum += loss_fn(logits, targets) * targets.size(0)
        count += targets.size(0)
    return {"correct": correct, "count": count, "loss_sum": loss_sum}


def accuracy(counts: dict) -> float:
    """Correct over counted, from `count_correct`'s result (0.0 for no batches); reads the count back."""
    return counts["correct"].item() / max(counts["count"], 1)
