"""The comparison-only re-implementation of nanoGPT's CPU recipe: the network, optimizer and schedule it describes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from accelbook.gpt import GPT, count_parameters
from accelbook.nanogpt_anchor import (
    AnchorSettings,
    learning_rate,
    model_config,
    optimizer_for,
    train,
)


def test_the_network_is_the_one_nanogpt_describes():
    """4 layers, 4 heads, 128 channels, context 64: nanoGPT's model.py would print '0.80M' parameters."""
    model = GPT(model_config(AnchorSettings()))
    assert f"{count_parameters(model) / 1e6:.2f}M" == "0.80M"
    assert all(m.bias is None for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm)))


def test_weight_decay_only_on_matrices_and_embeddings():
    """18 decayed tensors (4 weights per block, two embeddings), 9 LayerNorm weights without decay."""
    optimizer = optimizer_for(GPT(model_config(AnchorSettings())), AnchorSettings())
    decayed, plain = optimizer.param_groups
    assert (len(decayed["params"]), decayed["weight_decay"]) == (18, 0.1)
    assert (len(plain["params"]), plain["weight_decay"]) == (9, 0.0)
    assert optimizer.defaults["betas"] == (0.9, 0.99)


def test_learning_rate_warms_up_then_decays_by_a_cosine():
    s = AnchorSettings()
    assert learning_rate(0, s) == pytest.approx(1e-3 / 101)
    assert learning_rate(100, s) == pytest.approx(1e-3)
    assert learning_rate(1050, s) == pytest.approx((1e-3 + 1e-4) / 2)
    assert learning_rate(2000, s) == pytest.approx(1e-4)
    assert learning_rate(2001, s) == 1e-4


def test_a_short_run_evaluates_on_schedule_and_starts_near_chance():
    """Random tokens of 65 kinds: the untrained model's loss is close to ln 65; evaluations at 0, 2 and 4."""
    tokens = torch.randint(0, 65, (2000,), generator=torch.Generator().manual_seed(0))
    settings = dataclasses.replace(AnchorSettings(), max_iters=4, eval_interval=2, eval_iters=2)
    history = train(tokens[:1500], tokens[1500:], settings)
    assert [r["iter"] for r in history] == [0, 2, 4]
    assert history[0]["val_loss"] == pytest.approx(math.log(65), abs=0.3)
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(history, history[1:], strict=False))
    assert len(train(tokens[:1500], tokens[1500:], settings, target=100.0)) == 1
