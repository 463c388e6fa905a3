"""Native layers for models written for hptransfer: readout, residual branch and self-attention.

Each layer carries a plain float that ``hptransfer.parametrize`` sets (the forward multiplier of its rule),
so a model built from them needs no globs and no hooks, and at base shape behaves as ordinary PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Readout(nn.Linear):
    """Output layer (width -> finite). parametrize() sets ``multiplier`` to output_mult / m_fanin (TP5 Table 8).

    Args:
        in_features, out_features, bias: as nn.Linear.
        zero_init: start with zero weight and bias (TP5 App. D.2: removes the 1/sqrt(width) logit transient).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, zero_init: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        self.zero_init = zero_init
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.multiplier = 1.0

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "zero_init", False):
            nn.init.zeros_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiplier != 1.0:
            x = x * self.multiplier
        return F.linear(x, self.weight, self.bias)


class TiedReadout(nn.Module):
    """Readout sharing the embedding's weight: one tensor, the 1/m_N multiplier only on this use."""

    def __init__(self, embedding: nn.Embedding, bias: bool = False) -> None:
        super().__init__()
        self.weight = embedding.weight
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings)) if bias else None
        self.multiplier = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiplier != 1.0:
            x = x * self.multiplier
        return F.linear(x, self.weight, self.bias)


class Residual(nn.Module):
    """``x + multiplier * branch(x)``; parametrize() sets multiplier = branch_mult * m_L^-alpha and counts it.

    Every parameter of the enclosing block (this module's parent) follows the depth rules.
    """

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.multiplier = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.multiplier != 1.0:
            out = out * self.multiplier
        return x + out


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with mu-P logit scaling through ``logit_scale_factor``.

    The logits are ``logit_scale_factor * q.k / sqrt(head_dim)``; parametrize() sets the factor to
    ``alpha_attn * sqrt(base_head_dim / head_dim)``, which makes them ``alpha_attn * sqrt(d0) / d`` (TP5 App. B.1).

    Args:
        d_model: residual width. n_head: number of heads. head_dim: per-head width (default d_model // n_head).
        bias: biases on the projections. fused_qkv: one (3 * n_head * head_dim, d_model) projection.
        causal: causal mask. zero_init_query: zero the query projection (TP5 App. D.2).
    """

    def __init__(self, d_model: int, n_head: int, head_dim: int | None = None, *, bias: bool = True,
                 fused_qkv: bool = True, causal: bool = True, zero_init_query: bool = False) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_dim = head_dim or d_model // n_head
        inner = n_head * self.head_dim
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(d_model, 3 * inner, bias=bias)
        else:
            self.q = nn.Linear(d_model, inner, bias=bias)
            self.k = nn.Linear(d_model, inner, bias=bias)
            self.v = nn.Linear(d_model, inner, bias=bias)
        self.out = nn.Linear(inner, d_model, bias=bias)
        self.causal = causal
        self.logit_scale_factor = 1.0
        if zero_init_query:  # q = 0 at init, so the logits start at exactly zero
            with torch.no_grad():
                if fused_qkv:
                    self.qkv.weight[:inner].zero_()
                    if self.qkv.bias is not None:
                        self.qkv.bias[:inner].zero_()
                else:
                    self.q.weight.zero_()
                    if self.q.bias is not None:
                        self.q.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        if self.fused_qkv:
            q, k, v = self.qkv(x).split(self.n_head * self.head_dim, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        # (B, T, H*D) -> (B, H, T, D)
        q, k, v = (t.view(batch, seq, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        scale = self.logit_scale_factor / math.sqrt(self.head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=scale)
        return self.out(y.transpose(1, 2).reshape(batch, seq, self.n_head * self.head_dim))
