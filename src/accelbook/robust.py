"""Robustness, measured (chapter 9): overfitting and its remedies, adversarial examples, calibration.

Training reuses chapter 4's loop (`train.fit`); this module adds what the loop is fed (augmented or
adversarial batches), what it is judged by (early stopping, attacks, calibration) and the one-hot losses.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .data import MEAN, STD, normalize
from .step import accuracy, count_correct
from .train import evaluate, fit

LOW, HIGH = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD  # pixel values 0 and 1 after normalization


def augmentation(kind: str):
    """A torchvision v2 transform for one uint8 image (1, 28, 28): "affine", "crop" or "affine+crop"."""
    from torchvision.transforms import v2

    parts = {
        "affine": v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
        "crop": v2.RandomResizedCrop(28, scale=(0.7, 1.0), ratio=(0.8, 1.25), antialias=True),
    }
    names = kind.split("+")
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}: use affine, crop or affine+crop")
    return v2.Compose([parts[n] for n in names])


class OneHotBCE(nn.Module):
    """Sigmoid binary cross-entropy on one-hot targets: ten independent yes/no outputs (multi-label)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean BCE of `logits` (N, C) against the one-hot encoding of class indices `labels` (N,)."""
        return self.bce(logits, F.one_hot(labels, self.num_classes).to(logits.dtype))


def train_tracked(model: nn.Module, batches, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                  device: torch.device, epochs: int, val_batches, train_eval_batches, patience: int = 5,
                  progress: bool = False) -> tuple[list[dict], dict]:
    """`train.fit` with training accuracy per epoch, and what early stopping with `patience` would have kept.

    Training runs all `epochs` (to show the whole curve); `best` holds the weights, epoch and validation
    accuracy that early stopping keeps, and `stopped_at`, the epoch where it would have stopped (`early_stop`).
    """
    best = {"val_accuracy": -math.inf, "epoch": 0, "state": None, "stopped_at": None}
    val_accuracy = []

    def after_epoch(record: dict) -> None:
        record["train_accuracy"] = evaluate(model, train_eval_batches, device)["accuracy"]
        val_accuracy.append(record["val_accuracy"])
        if best["stopped_at"] is not None:
            return
        stop, kept = early_stop(val_accuracy, patience)  # the one statement of the rule
        if kept == record["epoch"]:
            best.update(val_accuracy=record["val_accuracy"], epoch=kept, state=copy.deepcopy(model.state_dict()))
        elif stop == record["epoch"] and stop - kept >= patience:
            best["stopped_at"] = stop

    history = fit(model, batches, optimizer, loss_fn, device, epochs, val_batches, progress, after_epoch)
    best["stopped_at"] = best["stopped_at"] or epochs
    return history, best


def early_stop(val_accuracy: list[float], patience: int) -> tuple[int, int]:
    """(epoch training stops at, epoch whose weights are kept): stop after `patience` epochs without a new best."""
    if patience < 1:
        raise ValueError(f"patience must be at least 1, got {patience}")
    best_epoch, best = 0, -math.inf
    for i, acc in enumerate(val_accuracy):
        if acc > best:
            best_epoch, best = i, acc
        elif i - best_epoch >= patience:
            return i + 1, best_epoch + 1
    return len(val_accuracy), best_epoch + 1


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=F.cross_entropy) -> torch.Tensor:
    """Gradient of the loss with respect to the input images (the model's weights get no gradient)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size `eps` (pixel units, 0-1) up the loss.

    `x` is normalized; the step is eps / STD in normalized units, and the result stays a valid image.
    """
    if eps == 0:
        return x.detach()
    step = eps / STD * input_gradient(model, x, y).sign()
    return (x.detach() + step).clamp(LOW, HIGH)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        alpha: float | None = None, restarts: int = 1) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): from a uniform random start in the eps-box, `steps` signed steps.

    Each step of `alpha` (pixel units; default 2.5 * eps / steps) goes up the loss and is projected back into the
    box and the valid pixel range. Each of `restarts` runs starts afresh, only for the images no run has fooled
    yet; each image keeps its worst case (fooled, else the highest loss). Random draws use torch's global generator.
    """
    if eps == 0:
        return x.detach()
    alpha = alpha if alpha is not None else 2.5 * eps / steps
    lo, hi = (x - eps / STD).clamp(LOW, HIGH), (x + eps / STD).clamp(LOW, HIGH)
    best = x.detach().clone()
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        todo = (~fooled).nonzero().flatten()
        if len(todo) == 0:
            break
        adv = pgd_run(model, x[todo], y[todo], lo[todo], hi[todo], eps, steps, alpha)
        with torch.no_grad():
            logits = model(adv)
            loss = F.cross_entropy(logits, y[todo], reduction="none")
            wrong = logits.argmax(1) != y[todo]
        keep = wrong | (loss > best_loss[todo])
        best[todo[keep]], best_loss[todo[keep]] = adv[keep], loss[keep]
        fooled[todo[wrong]] = True
    return best


def pgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float,
            steps: int, alpha: float) -> torch.Tensor:
    """One PGD run: a uniform random start within `eps` of `x`, then `steps` signed steps kept in [lo, hi]."""
    start = x.detach() + (torch.rand_like(x) * 2 - 1) * eps / STD
    adv = torch.minimum(torch.maximum(start, lo), hi)
    for _ in range(steps):
        adv = torch.minimum(torch.maximum(adv + alpha / STD * input_gradient(model, adv, y).sign(), lo), hi)
    return adv


def attacked_accuracy(model: nn.Module, attack: Callable, images: torch.Tensor, labels: torch.Tensor,
                      eps: float, device: torch.device, batch_size: int = 500) -> float:
    """Accuracy of `model` on uint8 `images` after `attack(model, x, y, eps)` perturbs each batch (`step.count_correct`)."""
    model.eval()

    def attacked() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(labels), batch_size):
            x = normalize(images[start:start + batch_size]).to(device)
            y = labels[start:start + batch_size].to(device)
            yield attack(model, x, y, eps), y

    return accuracy(count_correct(model, attacked(), device))


class AdversarialBatches:
    """Each batch of `batches` followed by its FGSM version against the current model: training on both halves."""

    def __init__(self, batches, model: nn.Module, eps: float):
        self.batches, self.model, self.eps = batches, model, eps

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(clean and adversarial images, their labels twice)."""
        for x, y in self.batches:
            # FGSM attacks the model in its training mode. For the book's ConvNet (no dropout,
            # BatchNorm off by default) that computes what eval mode would; with BatchNorm the
            # attack's pass would also move the running statistics, and with dropout it would
            # attack one dropped-out copy.
            yield torch.cat([x, fgsm(self.model, x, y, self.eps)]), torch.cat([y, y])


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> list[dict]:
    """Per confidence bin: count, mean confidence and accuracy of the top-class predictions (equal-width bins)."""
    confidence, predicted = probs.max(1)
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        rows.append({"low": lo.item(), "high": hi.item(), "count": n,
                     "confidence": confidence[inside].mean().item() if n else float("nan"),
                     "accuracy": (predicted[inside] == labels[inside]).float().mean().item() if n else float("nan")})
    return rows


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins (Naeini 2015)."""
    rows = reliability(probs, labels, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / total


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimizes the NLL of softmax(logits / T) (Guo et al. 2017): fit on validation."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.exp().item()
