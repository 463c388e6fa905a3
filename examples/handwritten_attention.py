"""A research GPT whose attention is written out by hand: refused until its scale is reachable.

    python examples/handwritten_attention.py

``softmax(q @ k^T * self.scale)`` is invisible to hptransfer's SDPA interception, so under mu-P the logits would
keep 1/sqrt(d). hptransfer finds it in a probe forward and refuses; naming the attribute that holds the scale
(``attention={"blocks.*.attn": "scale"}``) lets it set mu-P's sqrt(d0)/d.
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
                        eager_attention=True)


def main() -> None:
    torch.manual_seed(0)
    base = gpt(64, "meta")
    probe = torch.zeros(1, 8, dtype=torch.long)
    try:
        hpt.parametrize(gpt(256), base, "mup", example_inputs=probe)
    except hpt.AttentionError as err:
        print(f"refused: {err}")
    model = gpt(256)
    hpt.parametrize(model, base, "mup", attention={"blocks.*.attn": "scale"}, example_inputs=probe)
    print(f"attention scale now {model.blocks[0].attn.scale:.4g} (sqrt(16)/64 = {16 ** 0.5 / 64:.4g})")
    first, last = train_steps(model, lr=1e-2)
    print(f"loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
