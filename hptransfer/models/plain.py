"""Reference models in plain PyTorch, knowing nothing of hptransfer: what a user brings to parametrize().

Used by tests and benchmarks to show that unmodified models can be wrapped. Branch globs for the depth
schemes: GPT ``blocks.*.attn``, ``blocks.*.mlp``; residual MLP ``blocks.*.branch``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainMLP(nn.Sequential):
    """input -> ReLU -> hidden x (depth - 1) -> ReLU -> readout; width is the hidden size."""

    def __init__(self, width: int, d_in: int = 32, d_out: int = 10, depth: int = 2) -> None:
        layers: list[nn.Module] = [nn.Linear(d_in, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, d_out))
        super().__init__(*layers)


class PlainResBlock(nn.Module):
    """One layer per block (TP6): ``x + W relu(LN(x))``; zero-mean branch outputs, so they add up like noise at init."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class PlainResMLP(nn.Module):
    """Residual MLP with one linear layer per block, pre-LN, final LN and a linear readout."""

    def __init__(self, width: int, depth: int, d_in: int = 32, d_out: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(PlainResBlock(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))


class PlainAttention(nn.Module):
    """Causal multi-head attention: F.scaled_dot_product_attention (default 1/sqrt(d) scale), or written out
    by hand (``eager=True``: ``softmax(q @ k^T * self.scale)``, as research code often does)."""

    def __init__(self, d_model: int, n_head: int, fused_qkv: bool, eager: bool = False) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_dim = d_model // n_head
        self.scale = self.head_dim**-0.5
        self.eager = eager
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.c_attn = nn.Linear(d_model, 3 * d_model)
        else:
            self.q_proj = nn.Linear(d_model, d_model)
            self.k_proj = nn.Linear(d_model, d_model)
            self.v_proj = nn.Linear(d_model, d_model)
        self.c_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        if self.fused_qkv:
            q, k, v = self.c_attn(x).split(width, dim=2)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.eager:
            logits = (q @ k.transpose(-2, -1)) * self.scale
            mask = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
            y = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.c_proj(y.transpose(1, 2).reshape(batch, seq, width))


class PlainBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, fused_qkv: bool, eager: bool = False) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = PlainAttention(d_model, n_head, fused_qkv, eager)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PlainGPT(nn.Module):
    """Pre-LN GPT (nanoGPT-like): token + position embeddings, blocks, final LN, linear head.

    ``eager_attention`` writes attention out by hand; ``init_std`` replaces PyTorch's default init by nanoGPT's:
    every Linear and Embedding weight N(0, init_std^2), the output projections of attention and MLP
    N(0, init_std^2 / (2 n_layer)), biases zero.
    """

    def __init__(self, d_model: int = 128, n_layer: int = 2, n_head: int = 4, vocab_size: int = 96,
                 block_size: int = 64, fused_qkv: bool = True, tie_embeddings: bool = False,
                 eager_attention: bool = False, init_std: float | None = None) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(PlainBlock(d_model, n_head, fused_qkv, eager_attention) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if init_std is not None:
            for name, module in self.named_modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    scaled = name.endswith("c_proj") or name.endswith("mlp.2")
                    nn.init.normal_(module.weight, 0.0, init_std / (2 * n_layer) ** 0.5 if scaled else init_std)
                    if getattr(module, "bias", None) is not None:
                        nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))
