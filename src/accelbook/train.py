"""Training and evaluation loops shared by every chapter that trains (taught in chapter 4)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .step import accuracy, count_correct, make_step


def _progress(iterable, enabled: bool, **kwargs):
    """Wrap `iterable` in a tqdm bar (notebook-aware) when `enabled` and ACCELBOOK_PROGRESS is not 0."""
    from .config import progress_bars

    if not enabled or not progress_bars():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


class WeightAverage(nn.Module):
    """An exponential moving average of a model's weights and buffers, kept on the model's device.

    The update PyTorch's `AveragedModel` makes with `get_ema_multi_avg_fn`, without its step counter: that
    counter lives on the host and is copied to the device (a blocking copy) on every update, so each
    training step would wait for the GPU. Here the count is a Python int and the update is one
    `torch._foreach_lerp_` over the floating-point tensors: nothing is copied to or read from the host.
    Build it after `model.to(device)`: the average lives where the model is when it is made.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be between 0 and 1, got {decay}")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.updates = 0  # a host-side int: reading or increasing it never touches the device

    def forward(self, *args, **kwargs):
        """The averaged model's forward pass."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Move the average towards `model`'s weights and buffers (first: copy them)."""
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        floats = [i for i, t in enumerate(mine) if t.is_floating_point()]
        if self.updates == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            torch._foreach_lerp_(
                [mine[i] for i in floats], [theirs[i] for i in floats], 1.0 - self.decay
            )
            # counters such as BatchNorm's num_batches_tracked are copied, not averaged
            for i in set(range(len(mine))) - set(floats):
                mine[i].copy_(theirs[i])
        self.updates += 1

    def get_extra_state(self) -> dict:
        """The update count travels in `state_dict()`, so a resumed average keeps averaging."""
        return {"updates": self.updates}

    def set_extra_state(self, state: dict) -> None:
        """Restore the update count saved by `get_extra_state`."""
        self.updates = int(state["updates"])


def weight_average(model: nn.Module, decay: float = 0.999) -> WeightAverage:
    """An exponential moving average of `model`'s weights (and buffers), for `fit(average=...)` to update."""
    return WeightAverage(model, decay)


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, progress: bool = False,
                    average: WeightAverage | None = None) -> float:
    """One pass over `batches` of (images, labels), updating `average` after each step; returns the mean loss."""
    model.train()
    step = make_step(model, optimizer, loss_fn, device, average=average)
    total, count = torch.zeros((), device=device), 0
    for images, labels in _progress(batches, progress, desc="train", leave=False):
        total += step(images, labels) * labels.size(0)
        count += labels.size(0)
    return (total / max(count, 1)).item()  # .item() waits for the device: the epoch's work is done


def evaluate(model: nn.Module, batches: Iterable, device: torch.device,
             loss_fn: nn.Module | None = None) -> dict:
    """Accuracy (and mean loss when `loss_fn` is given) of `model` over `batches`."""
    counts = count_correct(model, batches, device, loss_fn=loss_fn)
    result = {"accuracy": accuracy(counts)}
    if loss_fn is not None:
        result["loss"] = (counts["loss_sum"] / max(counts["count"], 1)).item()
    return result


def fit(
    model: nn.Module,
    train_batches: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    epochs: int,
    val_batches: Iterable | None = None,
    progress: bool = False,
    on_epoch_end: Callable[[dict], None] | None = None,
    average: WeightAverage | None = None,
) -> list[dict]:
    """Train for `epochs`, validating after each (and `average`, as avg_val_*).

    Returns one record per epoch.
    """
    history = []
    bar = _progress(range(1, epochs + 1), progress, desc="epochs", unit="epoch")
    for epoch in bar:
        start = time.perf_counter()
        train_loss = train_one_epoch(
            model, train_batches, optimizer, loss_fn, device, progress, average
        )
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds}
        if val_batches is not None:
            val = evaluate(model, val_batches, device, loss_fn)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            if average is not None:
                avg = evaluate(average, val_batches, device, loss_fn)
                record.update(
                    avg_val_loss=avg["loss"], avg_val_accuracy=avg["accuracy"]
                )
        history.append(record)
        # a bar is shown: progress=True and ACCELBOOK_PROGRESS is not 0
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history


@torch.no_grad()
def logits_and_labels(model: nn.Module, batches: Iterable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) of `model` over `batches`, gathered on the CPU."""
    model.eval()
    logits, labels = [], []
    for images, target in batches:
        logits.append(model(images.to(device, non_blocking=True)).float().cpu())
        labels.append(target.cpu())
    return torch.cat(logits), torch.cat(labels)


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    flat = target.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
