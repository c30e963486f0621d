"""COMPARISON ONLY: nanoGPT's CPU recipe for Tiny Shakespeare, re-implemented to race against (chapter 10).

Not the book's recipe. This module reproduces, as faithfully as the book can, the run that nanoGPT's README
gives for "I only have a macbook":

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

("This still runs in about ~3 minutes, but gets us a loss of only 1.88"), with the settings of
config/train_shakespeare_char.py and the defaults of train.py and model.py it inherits (karpathy/nanoGPT,
commit 3adf61e, MIT licence): AdamW with weight decay 0.1 on the matrices and embeddings only, betas
(0.9, 0.99), learning rate 1e-3 with 100 warm-up iterations and cosine decay to 1e-4, gradients clipped at
norm 1.0, no biases, random windows of the training text, the loss estimated on 20 random batches of each
split every 250 iterations. The network is the book's `accelbook.gpt.GPT`, which has nanoGPT's layers,
shapes and initialization (`test_nanogpt_anchor.py` checks the parameter count nanoGPT would print).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .data import token_batch
from .gpt import GPT, GPTConfig, lm_loss

SOURCE = "karpathy/nanoGPT@3adf61e (README 'I only have a macbook'; config/train_shakespeare_char.py; train.py)"
REPORTED_VAL_LOSS = 1.88  # nanoGPT's README for this run ("gets us a loss of only 1.88")


@dataclass(frozen=True)
class AnchorSettings:
    """The README's command line over config/train_shakespeare_char.py over train.py's defaults."""

    block_size: int = 64
    batch_size: int = 12
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    max_iters: int = 2000
    lr_decay_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    seed: int = 1337


def model_config(settings: AnchorSettings, vocab_size: int = 65) -> GPTConfig:
    """The network of the run: no biases, dropout 0, attention through SDPA (nanoGPT's 'flash' path)."""
    return GPTConfig(vocab_size=vocab_size, block_size=settings.block_size, n_layer=settings.n_layer,
                     n_head=settings.n_head, n_embd=settings.n_embd, dropout=settings.dropout, bias=False,
                     attention="sdpa")


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT's parameter groups: weight decay on tensors of two or more dimensions, none on the others."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def optimizer_for(model: torch.nn.Module, settings: AnchorSettings) -> torch.optim.AdamW:
    """nanoGPT's configure_optimizers on a CPU: AdamW over `decay_groups` (its fused AdamW is CUDA-only)."""
    return torch.optim.AdamW(decay_groups(model, settings.weight_decay), lr=settings.learning_rate,
                             betas=(settings.beta1, settings.beta2))


def learning_rate(it: int, settings) -> float:
    """nanoGPT's get_lr: linear warm-up, cosine decay to min_lr at lr_decay_iters, min_lr after.

    `settings` is an AnchorSettings or anything with its four fields (the book's `lm.LMRecipe` has them).
    """
    if it < settings.warmup_iters:
        return settings.learning_rate * (it + 1) / (settings.warmup_iters + 1)
    if it > settings.lr_decay_iters:
        return settings.min_lr
    ratio = (it - settings.warmup_iters) / (settings.lr_decay_iters - settings.warmup_iters)
    return settings.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (settings.learning_rate - settings.min_lr)


def random_batch(tokens: torch.Tensor, settings: AnchorSettings, device: torch.device):
    """nanoGPT's get_batch: batch_size windows at random starts (the global RNG, drawn as it draws them)."""
    x, y = token_batch(tokens, settings.block_size, settings.batch_size)
    return x.to(device), y.to(device)


@torch.no_grad()
def estimate_loss(model: GPT, splits: dict[str, torch.Tensor], settings: AnchorSettings,
                  device: torch.device) -> dict[str, float]:
    """nanoGPT's estimate_loss: the mean loss of eval_iters random batches of each split, in eval mode."""
    model.eval()
    out = {}
    for name, tokens in splits.items():
        losses = [lm_loss(model(x), y).item() for x, y in
                  (random_batch(tokens, settings, device) for _ in range(settings.eval_iters))]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


def train(train_tokens: torch.Tensor, val_tokens: torch.Tensor, settings: AnchorSettings = AnchorSettings(),
          device: str | torch.device = "cpu", vocab_size: int = 65, target: float | None = None) -> list[dict]:
    """Run the recipe (iterations 0..max_iters, as train.py does); one record per evaluation.

    Each record holds the iteration, both losses and the seconds since the start (evaluations included,
    as in nanoGPT's own run time). With `target`, the run stops at the first evaluation whose validation
    loss is at or below it.
    """
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    model = GPT(model_config(settings, vocab_size)).to(device)
    optimizer = optimizer_for(model, settings)
    splits = {"train": train_tokens, "val": val_tokens}
    history, start = [], time.perf_counter()
    x, y = random_batch(train_tokens, settings, device)
    for it in range(settings.max_iters + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(it, settings)
        if it % settings.eval_interval == 0:
            losses = estimate_loss(model, splits, settings, device)
            history.append({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                            "seconds": time.perf_counter() - start})
            if target is not None and losses["val"] <= target:
                break
        loss = lm_loss(model(x), y)
        x, y = random_batch(train_tokens, settings, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return history
