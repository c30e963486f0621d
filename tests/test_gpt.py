"""The character-level GPT of chapter 10: shapes, causality, the two attentions, parameters and FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from accelbook.gpt import (
    GPT,
    GPTConfig,
    count_parameters,
    counted_flops_per_token,
    flops_per_token,
    generate,
    lm_loss,
)

SMALL = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32)


def model_for(config: GPTConfig, seed: int = 0) -> GPT:
    """A GPT built from a fixed seed, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    return GPT(config).eval()


def test_logits_have_one_row_per_position_and_token():
    idx = torch.randint(0, 65, (3, 16))
    assert model_for(SMALL)(idx).shape == (3, 16, 65)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_a_position_does_not_see_later_tokens(attention):
    """Changing tokens after position 7 leaves the logits at positions 0..7 exactly as they were."""
    model = model_for(GPTConfig(**{**SMALL.__dict__, "attention": attention}))
    idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 65
    a, b = model(idx), model(changed)
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_explicit_and_sdpa_attention_agree_to_fp32_round_off():
    explicit = model_for(GPTConfig(**{**SMALL.__dict__, "attention": "explicit"}))
    fused = model_for(GPTConfig(**{**SMALL.__dict__, "attention": "sdpa"}))
    idx = torch.randint(0, 65, (4, 16), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(explicit(idx), fused(idx), rtol=1e-5, atol=1e-5)


def test_context_longer_than_the_block_is_refused():
    with pytest.raises(ValueError, match="longer than the context"):
        model_for(SMALL)(torch.zeros(1, 17, dtype=torch.long))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="attention must be"):
        GPTConfig(attention="flash")


def test_parameter_count_of_nanogpts_cpu_configuration():
    """4 layers x (12 d^2 weights + two LayerNorms of d), the tied 65 x d embedding, the final LayerNorm."""
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    d = config.n_embd
    expected = config.n_layer * (12 * d * d + 2 * d) + config.vocab_size * d + d
    model = GPT(config)
    assert count_parameters(model) == expected  # nanoGPT prints this one as "0.80M"
    assert count_parameters(model, non_embedding=False) == expected + config.block_size * d
    assert model.head.weight is model.tok_emb.weight


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_counted_flops_match_6n_plus_12ltd(attention):
    """FlopCounterMode's count of one forward and backward, per token, within 1 % of PaLM's formula."""
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, attention=attention)
    n_params = count_parameters(GPT(config))
    assert counted_flops_per_token(config) == pytest.approx(flops_per_token(config, n_params), rel=0.01)


def test_flops_are_counted_on_real_tensors_as_on_meta_ones():
    """The meta-device count (no memory, no arithmetic) equals a count over a real forward and backward."""
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, attention="explicit")
    model = GPT(config)
    idx = torch.randint(0, 65, (2, config.block_size))
    with FlopCounterMode(display=False) as counter:
        lm_loss(model(idx), idx).backward()
    assert counter.get_total_flops() / idx.numel() == counted_flops_per_token(config)


def test_generation_is_reproducible_and_extends_the_prompt():
    model = model_for(SMALL)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(3), top_k=10)
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(3), top_k=10)
    assert a.shape == (1, 21) and torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 1, temperature=0)


def test_activation_checkpointing_gives_the_same_gradients_and_keeps_less_for_backward():
    """Blocks recomputed in the backward pass: identical gradients; autograd keeps fewer bytes meanwhile."""
    from accelbook.lm import saved_bytes

    config = GPTConfig(**{**SMALL.__dict__, "n_layer": 3})
    plain, recomputed = model_for(config).train(), model_for(GPTConfig(**{**config.__dict__, "checkpoint": True})).train()
    idx = torch.randint(0, 65, (4, 16), generator=torch.Generator().manual_seed(4))
    for model in (plain, recomputed):
        lm_loss(model(idx), idx).backward()
    for (name, p), q in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    kept = {name: saved_bytes(lambda i, m=m: lm_loss(m(i), i), idx)[0] for name, m in (("plain", plain), ("checkpointed", recomputed))}
    assert kept["checkpointed"] < kept["plain"] / 2, kept
