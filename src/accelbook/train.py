"""Training and evaluation loops shared by every chapter that trains (taught in chapter 4)."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def _progress(iterable, enabled: bool, **kwargs):
    """Wrap `iterable` in a tqdm bar (notebook-aware) when `enabled` and ACCELBOOK_PROGRESS is not 0."""
    from .config import progress_bars

    if not enabled or not progress_bars():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def weight_average(model: nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of `model`'s weights (and buffers), for `fit(average=...)` to update."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be between 0 and 1, got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, progress: bool = False,
                    average: AveragedModel | None = None) -> float:
    """One pass over `batches` of (images, labels), updating `average` after each step; returns the mean loss."""
    model.train()
    total, count = torch.zeros((), device=device), 0
    for images, labels in _progress(batches, progress, desc="train", leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        total += loss.detach() * labels.size(0)
        count += labels.size(0)
    return (total / max(count, 1)).item()  # .item() waits for the device: the epoch's work is done


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device,
             loss_fn: nn.Module | None = None) -> dict:
    """Accuracy (and mean loss when `loss_fn` is given) of `model` over `batches`."""
    model.eval()
    correct, count = torch.zeros((), device=device), 0
    total = torch.zeros((), device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(images)
        correct += (logits.argmax(1) == labels).sum()
        if loss_fn is not None:
            total += loss_fn(logits, labels) * labels.size(0)
        count += labels.size(0)
    result = {"accuracy": (correct / max(count, 1)).item()}
    if loss_fn is not None:
        result["loss"] = (total / max(count, 1)).item()
    return result


def fit(model: nn.Module, train_batches: Iterable, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
        device: torch.device, epochs: int, val_batches: Iterable | None = None, progress: bool = False,
        on_epoch_end: Callable[[dict], None] | None = None, average: AveragedModel | None = None) -> list[dict]:
    """Train for `epochs`, validating after each (`average` too, as avg_val_*); one record per epoch."""
    history = []
    bar = _progress(range(1, epochs + 1), progress, desc="epochs", unit="epoch")
    for epoch in bar:
        start = time.perf_counter()
        train_loss = train_one_epoch(model, train_batches, optimizer, loss_fn, device, progress, average)
        record = {"epoch": epoch, "train_loss": train_loss, "seconds": time.perf_counter() - start}
        if val_batches is not None:
            val = evaluate(model, val_batches, device, loss_fn)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            if average is not None:
                avg = evaluate(average, val_batches, device, loss_fn)
                record.update(avg_val_loss=avg["loss"], avg_val_accuracy=avg["accuracy"])
        history.append(record)
        if hasattr(bar, "set_postfix"):  # a bar is shown (progress on, ACCELBOOK_PROGRESS not 0)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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
