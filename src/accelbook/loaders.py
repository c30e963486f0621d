"""Feeding the model: a validation split, a device-resident loader, and timing a loader (chapter 4)."""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import torch

from .bench import synchronize
from .data import normalize


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint sorted (train, validation) index tensors over range(n), reproducible from `seed`."""
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1}, got {val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


class DeviceLoader:
    """Batches from one uint8 image tensor kept on `device`: normalised on the fly, reshuffled there each epoch.

    Yields what `DataLoader(MNIST(transform=mnist_transform()))` yields — float (B, 1, 28, 28) images
    and int64 labels — without PIL, worker processes or host-to-device copies. `order` holds the
    sample order of the latest epoch (positions in `images`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0):
        if images.dtype != torch.uint8 or len(images) != len(labels):
            raise ValueError("images must be one uint8 tensor with one label per image")
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator(device=self.device).manual_seed(seed) if shuffle else None
        self.order: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (normalised images, labels) batches, already on the device."""
        n = len(self.labels)
        if self.shuffle:
            self.order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            self.order = torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = self.order[start:start + self.batch_size]
            yield normalize(self.images[index]), self.labels[index]


def iterate_seconds(batches: Iterable, device: torch.device) -> float:
    """Seconds to draw every batch of one epoch and move it to `device` (no model: the loader's cost alone)."""
    start = time.perf_counter()
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    synchronize(device)
    return time.perf_counter() - start
