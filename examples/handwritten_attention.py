"""A research GPT whose attention is written out by hand: reached where its scale lives in an attribute,
refused where it is written in the forward.

    python examples/handwritten_attention.py

``softmax(q @ k^T * self.scale)`` is invisible to an SDPA interception. hptransfer finds the call in a probe
forward, measures its scale, and finds the attribute that sets it by changing each float attribute of the module
and measuring again; it then sets mu-P's sqrt(d0)/d there. nanoGPT's manual path writes
``* (1.0 / math.sqrt(k.size(-1)))`` in the forward: nothing holds that scale, so hptransfer refuses the model
(under SP nothing needs to change, and it is accepted).
"""

from __future__ import annotations

import math

import torch

import hptransfer as hpt
from hptransfer.models import PlainGPT

from _train import train_steps, vocab_size

VOCAB = vocab_size()  # read before any meta-device block


def gpt(width: int, device: str = "cpu") -> PlainGPT:
    with torch.device(device):
        return PlainGPT(d_model=width, n_layer=2, n_head=4, vocab_size=VOCAB, block_size=32,
                        eager_attention=True)


def literal_scale(self, x: torch.Tensor) -> torch.Tensor:
    """The same attention with its scale written out (nanoGPT's manual path)."""
    batch, seq, width = x.shape
    q, k, v = self.c_attn(x).split(width, dim=2)
    q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(~torch.ones(seq, seq, dtype=torch.bool).tril(), float("-inf")).softmax(dim=-1)
    return self.c_proj((att @ v).transpose(1, 2).reshape(batch, seq, width))


def main() -> None:
    torch.manual_seed(0)
    base = gpt(64, "meta")
    probe = torch.zeros(1, 8, dtype=torch.long)
    written_out = gpt(256)
    for block in written_out.blocks:
        block.attn.forward = literal_scale.__get__(block.attn)
    try:
        hpt.parametrize(written_out, base, "mup", example_inputs=probe)
    except hpt.AttentionError as err:
        print(f"refused: {err}")
    model = gpt(256)
    plan = hpt.parametrize(model, base, "mup", example_inputs=probe)
    print(f"attention scale now {model.blocks[0].attn.scale:.4g} (sqrt(16)/64 = {16 ** 0.5 / 64:.4g}), found in "
          f"{[(m.name, m.attribute) for m in plan.modules if m.kind == 'attention'][:2]}")
    first, last = train_steps(model, lr=1e-2)
    print(f"loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
