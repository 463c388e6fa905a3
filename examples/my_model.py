"""Example: point the recipes at your own model without changing hptransfer.

    python recipes/mutransfer.py experiment=smoke model.family=examples.my_model:build \
        +model.parametrize.branches=[blocks.*.attn,blocks.*.mlp] +model.parametrize.base_head_dim=8

A builder takes (width, depth, options) and returns an nn.Module; ``options`` holds model.options plus what the
data adds (vocab_size for token data, d_in/d_out for classification).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hptransfer.models import PlainGPT


def build(width: int, depth: int, options: dict[str, Any]) -> nn.Module:
    return PlainGPT(d_model=width, n_layer=depth, n_head=options.get("n_head", 4),
                    vocab_size=options["vocab_size"], block_size=options.get("block_size", 64))
