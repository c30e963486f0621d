"""Training and evaluation loops shared by every chapter that trains."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def _progress(iterable, enabled: bool, **kwargs):
    """Wrap `iterable` in a tqdm bar (notebook-aware) when `enabled`."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, progress: bool = False) -> float:
    """One pass over `batches` of (images, labels); returns the mean training loss."""
    model.train()
    total, count = torch.zeros((), device=device), 0
    for images, labels in _progress(batches, progress, desc="train", leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.detach() * labels.size(0)
        count += labels.size(0)
    return (total / max(count, 1)).item()


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
