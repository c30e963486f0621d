"""Multi-class focal loss against cross-entropy and a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from accelbook.losses import FocalLoss, focal_loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gamma_zero_is_cross_entropy(reduction):
    torch.manual_seed(0)
    logits, target = torch.randn(32, 10), torch.randint(0, 10, (32,))
    expected = F.cross_entropy(logits, target, reduction=reduction)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0, reduction=reduction), expected)


def test_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    target = torch.tensor([0, 1])
    total = 0.0
    for row, t in zip(logits.tolist(), target.tolist(), strict=True):
        p = math.exp(row[t]) / sum(math.exp(v) for v in row)
        total += -((1 - p) ** 2) * math.log(p)
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(total / 2, rel=1e-6)


def test_alpha_weights_each_sample_by_its_class():
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    alpha = torch.tensor([0.25, 0.5, 1.0])
    plain = focal_loss(logits, target, gamma=1.5, reduction="none")
    torch.testing.assert_close(focal_loss(logits, target, 1.5, alpha, "none"), alpha[target] * plain)


def test_easy_examples_are_down_weighted():
    easy = torch.tensor([[8.0, 0.0]])
    target = torch.tensor([0])
    assert focal_loss(easy, target, gamma=2.0) < 1e-3 * F.cross_entropy(easy, target)


def test_module_equals_function_and_backpropagates():
    logits = torch.randn(4, 10, requires_grad=True)
    target = torch.tensor([1, 2, 3, 4])
    loss = FocalLoss(gamma=2.0)(logits, target)
    torch.testing.assert_close(loss, focal_loss(logits, target, gamma=2.0))
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("bad", [{"gamma": -1.0}, {"reduction": "avg"}])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), **bad)
