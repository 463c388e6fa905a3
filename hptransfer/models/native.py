"""Reference models written with hptransfer.nn: no globs needed, and examples of the native layers.

GPT (pre-LN transformer), ResMLP (one layer per block, TP6's setting) and MLP, each sized by ``width``
and ``depth`` so a ladder of them is one call per size.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as hnn


class GPT(nn.Module):
    """Pre-LN GPT: each block is two hnn.Residual branches (attention, MLP); readout hnn.Readout/TiedReadout.

    Args:
        d_model: width. n_layer: blocks. n_head: heads (fixed; head_dim = d_model // n_head unless given).
        vocab_size, block_size: finite dims. fused_qkv: one qkv projection. tie_embeddings: share wte.
        zero_init_readout, zero_init_query: TP5 App. D.2 options.
    """

    def __init__(self, d_model: int = 128, n_layer: int = 2, n_head: int = 4, vocab_size: int = 96,
                 block_size: int = 64, *, head_dim: int | None = None, fused_qkv: bool = True,
                 tie_embeddings: bool = False, zero_init_readout: bool = False,
                 zero_init_query: bool = False, d_ff_mult: int = 4) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList()
        for _ in range(n_layer):
            block = nn.Module()
            block.attn = hnn.Residual(nn.Sequential(
                nn.LayerNorm(d_model),
                hnn.SelfAttention(d_model, n_head, head_dim, fused_qkv=fused_qkv,
                                  zero_init_query=zero_init_query)))
            block.mlp = hnn.Residual(nn.Sequential(
                nn.LayerNorm(d_model), nn.Linear(d_model, d_ff_mult * d_model), nn.GELU(),
                nn.Linear(d_ff_mult * d_model, d_model)))
            self.blocks.append(block)
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head: nn.Module = (hnn.TiedReadout(self.wte) if tie_embeddings
                                   else hnn.Readout(d_model, vocab_size, bias=False, zero_init=zero_init_readout))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block.mlp(block.attn(x))
        return self.lm_head(self.ln_f(x))


class ResMLP(nn.Module):
    """Residual MLP, one linear layer per block: ``x + m * W relu(LN(x))`` (TP6 block depth 1)."""

    def __init__(self, width: int, depth: int, d_in: int = 32, d_out: int = 10, *,
                 zero_init_readout: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            hnn.Residual(nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width)))
            for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = hnn.Readout(width, d_out, zero_init=zero_init_readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))


class MLP(nn.Sequential):
    """input -> ReLU -> (hidden -> ReLU) x (depth - 1) -> hnn.Readout."""

    def __init__(self, width: int, d_in: int = 32, d_out: int = 10, depth: int = 2) -> None:
        layers: list[nn.Module] = [nn.Linear(d_in, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(hnn.Readout(width, d_out))
        super().__init__(*layers)


class ResNet(nn.Module):
    """Small conv ResNet: conv stem, ``depth`` blocks ``x + m * conv(relu(GN(x)))`` at ``width`` channels, pool,
    hnn.Readout. One conv per block (TP6's block depth 1); GroupNorm(1, width) normalizes each sample."""

    def __init__(self, width: int, depth: int, in_channels: int = 1, n_classes: int = 10, *,
                 zero_init_readout: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            hnn.Residual(nn.Sequential(nn.GroupNorm(1, width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)))
            for _ in range(depth))
        self.norm = nn.GroupNorm(1, width)
        self.out = hnn.Readout(width, n_classes, zero_init=zero_init_readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x).mean(dim=(2, 3)))
