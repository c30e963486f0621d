"""A small character-level GPT (chapter 10): decoder-only, pre-LayerNorm, causal self-attention.

Written for this book after the architecture of GPT-2 as nanoGPT implements it (Karpathy, MIT licence)
and the transformer of Vaswani et al. (2017). Attention has two interchangeable forms so the ladder can
switch between them: the explicit one (matrix product, causal mask, softmax, matrix product), which
stores a T x T score matrix per head, and PyTorch's `F.scaled_dot_product_attention`, which may pick a
fused kernel (flash, memory-efficient, cuDNN) and never stores the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

ATTENTION = ("explicit", "sdpa")


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape: vocabulary, context length, depth, heads, width, dropout."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    attention: str = "sdpa"
    checkpoint: bool = False  # activation checkpointing: each block's activations recomputed in the backward pass

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Causal attention written out: softmax(q k^T / sqrt(d) + causal mask) v,
    scores stored in full."""
    t = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    weights = F.dropout(weights, p=dropout_p, training=training)
    return weights @ v


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Causal attention through F.scaled_dot_product_attention (PyTorch chooses
    the kernel)."""
    p = dropout_p if training else 0.0
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)


ATTENTION_FUNCTIONS = {"explicit": explicit_attention, "sdpa": sdpa_attention}


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one projection to q, k, v; heads attended; one output projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.attend = ATTENTION_FUNCTIONS[config.attention]
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=2))
        y = self.attend(q, k, v, dropout_p=self.dropout, training=self.training)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class MLP(nn.Module):
    """The position-wise feed-forward block: widen four times, GELU, project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.down = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """One transformer block, pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token and position embeddings, n_layer blocks, a final LayerNorm, logits through the tied embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (Press & Wolf, 2017)
        self.apply(init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token indices (B, T) with T <= block_size -> logits (B, T, vocab_size)."""
        t = idx.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than the context ({self.config.block_size})")
        x = self.drop(self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device)))
        recompute = self.config.checkpoint and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return self.head(self.ln_f(x))


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialization: normal(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of next-token logits (B, T, V) against targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def count_parameters(model: GPT, non_embedding: bool = True) -> int:
    """Parameters counted once (the tied head is the token embedding); position embeddings left out by default."""
    total = sum(p.numel() for p in model.parameters())
    return total - model.pos_emb.weight.numel() if non_embedding else total


def flops_per_token(config: GPTConfig, n_params: int) -> int:
    """Training FLOPs per token, 6N + 12 L T d (PaLM, appendix B): weights' matmuls plus attention's."""
    return 6 * n_params + 12 * config.n_layer * config.block_size * config.n_embd


def counted_flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token as FlopCounterMode counts one forward and backward on the meta device.

    Counted with the explicit attention, whose matrix products the counter sees: it has no formula for
    some fused kernels (PyTorch 2.14 counts nothing for SDPA's CPU flash kernel), which do the same work.
    Counted without activation checkpointing: these are the model's FLOPs (MFU's numerator), not the
    recomputed forward a checkpointed run adds.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = GPT(replace(config, attention="explicit", dropout=0.0, checkpoint=False))
        idx = torch.zeros(1, config.block_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        lm_loss(model(idx), idx).backward()
    return counter.get_total_flops() / idx.numel()


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) by sampling new_tokens tokens, feeding back at most the last block_size."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    for _ in range(new_tokens):
        logits = model(idx[:, -model.config.block_size:])[:, -1, :] / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return idx
