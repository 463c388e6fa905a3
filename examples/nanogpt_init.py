"""A nanoGPT-style model with N(0, 0.02) init and a meta base: the init law is read off the model's weights.

    python examples/nanogpt_init.py

With a meta base there is no base std to measure. hptransfer recognises PyTorch's default init by its exact
bounds, and for a custom init it checks which width laws the weights rule out (here: equal stds across layers
of different fan-in mean a constant init). Where nothing rules them out it refuses instead of guessing.
"""

from __future__ import annotations

import torch

import hptransfer as hpt
from hptransfer.models import PlainGPT

from _train import train_steps, vocab_size

VOCAB = vocab_size()  # read before any meta-device block


def gpt(width: int, device: str = "cpu") -> PlainGPT:
    with torch.device(device):
        return PlainGPT(d_model=width, n_layer=2, n_head=4, vocab_size=VOCAB, block_size=32,
                        init_std=None if device == "meta" else 0.02)


def main() -> None:
    torch.manual_seed(0)
    model = gpt(512)
    plan = hpt.parametrize(model, gpt(64, "meta"), "mup")
    print("\n".join(line for line in plan.table().splitlines() if line.startswith(("init std from", "note"))))
    std = float(model.blocks[0].attn.c_attn.weight.detach().std())
    print(f"c_attn std {std:.5f} (0.02 * sqrt(64 / 512) = {0.02 * (64 / 512) ** 0.5:.5f})")
    first, last = train_steps(model, lr=1e-2)
    print(f"loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
