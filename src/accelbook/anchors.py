"""COMPARISON ONLY: the fastest public MNIST recipe we know, re-implemented from its published description.

Source: T. Oikarinen, "Training a NN to 99% accuracy on MNIST in 0.76 seconds", repository
tuomaso/train_mnist_fast (README and its final notebook, "8_Final_00s76"): 99.04 % mean test accuracy
over 30 seeds in 0.762 s on a GTX 1660 Ti laptop GPU. What it describes, and what this module does:

- data: MNIST through ToTensor + Normalize((0.1307,), (0.3081,)), the training set shuffled once and
  stored, then held on the device as float tensors; training walks it in that stored order;
- model: conv 5x5 (1 -> 24) -> max pool 2 -> ReLU -> conv 3x3 (24 -> 32) -> max pool 2 -> ReLU ->
  flatten (800) -> linear 256 -> ReLU -> linear 10 -> log-softmax, with the negative log-likelihood loss;
- optimizer: Adam, learning rate 0.01, betas (0.7, 0.9); OneCycleLR with peak 0.01 over the run's
  steps, no momentum cycling; batch 256; one epoch over all 60,000 images; fp32, eager;
- timing: from building the model to the test accuracy (test batches of 2,000); loading the stored
  tensors is not timed.

This is the book's own code written from that description (the model is `SmallNet(c1=24)`, which is the
same layer stack); any difference from the original is ours. The chapter runs it beside the book's
recipe, on the same machine, in the same session, under the same backend settings (`ladder.race`).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .bench import synchronize
from .data import Data, normalize
from .models import SmallNet
from .step import accuracy, count_correct

SOURCE = "tuomaso/train_mnist_fast (T. Oikarinen), README and notebook 8_Final_00s76"


def anchor_tensors(data: Data, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Training images (all of `data`'s, shuffled once), labels, test images and labels: floats on `device`."""
    index = data.all_index()
    order = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]
    return (normalize(data.images[order]).to(device), data.labels[order].to(device),
            normalize(data.test_images).to(device), data.test_labels.to(device))


def train_anchor(tensors: tuple[torch.Tensor, ...], device: torch.device, seed: int = 0) -> dict:
    """One run of the anchor recipe on prepared tensors: wall seconds (model to test accuracy) and accuracy."""
    x, y, x_test, y_test = tensors
    torch.manual_seed(seed)
    synchronize(device)
    start = time.perf_counter()
    model = SmallNet(c1=24, c2=32, hidden=256).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.7, 0.9))
    batch = 256
    steps = (len(x) - 1) // batch + 1
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps, cycle_momentum=False)
    model.train()
    for i in range(steps):
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(x[i * batch:(i + 1) * batch]), dim=1), y[i * batch:(i + 1) * batch])
        loss.backward()
        optimizer.step()
        schedule.step()
    test = accuracy(count_correct(model, zip(x_test.split(2000), y_test.split(2000), strict=True), device))  # every image
    wall = time.perf_counter() - start
    return {"wall_s": wall, "test_accuracy": test}
