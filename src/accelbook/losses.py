"""Multi-class focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               alpha: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """-alpha_t * (1 - p_t)**gamma * log(p_t) over classes; equals cross-entropy at
    gamma=0, alpha=None."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(
            f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
        )
    log_pt = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    if alpha is not None:
        loss = alpha.to(loss.device, loss.dtype)[target] * loss
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


class FocalLoss(nn.Module):
    """Module form of `focal_loss`, a drop-in for nn.CrossEntropyLoss on (N, C) logits."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None, reduction: str = "mean"):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma, self.reduction = gamma, reduction
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of `logits` (N, C) against class indices `target` (N,)."""
        return focal_loss(logits, target, self.gamma, self.alpha, self.reduction)
