"""Feeding the model: a validation split, a device-resident loader, and timing a loader (chapter 4)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

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
    """Batches from one uint8 image tensor kept on `device`: normalized on the fly, reshuffled there each epoch.

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
        """One epoch of (normalized images, labels) batches, already on the device."""
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


def endless(batches: Iterable) -> Iterator:
    """Batches from `batches`, starting a new epoch (a new iterator) whenever one ends."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches")


class AugmentedLoader:
    """Batches of uint8 images, each transformed on its own (new random parameters every time), then normalized.

    A v2 transform given a whole batch applies one set of random parameters to every image in it; this
    loader calls it per image, as a DataLoader over a Dataset with that transform would.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, transform: Callable | None,
                 seed: int = 0, device: torch.device | str = "cpu"):
        self.images, self.labels = images.unsqueeze(1) if images.dim() == 3 else images, labels
        self.batch_size, self.transform, self.device = batch_size, transform, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)  # the order of the images: the same with or without
        self.draws = torch.Generator().manual_seed(seed + 1_000_003)  # a transform, which draws from its own

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of (normalized, augmented images, labels) on the device."""
        order = torch.randperm(len(self.labels), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            batch = self.images[index]
            if self.transform is not None:
                with torch.random.fork_rng(devices=[]):  # v2 draws from the global generator: seed a private copy
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=self.draws)))
                    batch = torch.stack([self.transform(img) for img in batch])
            yield normalize(batch).to(self.device), self.labels[index].to(self.device)
