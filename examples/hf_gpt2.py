"""A transformers GPT-2 (tied embeddings, Conv1D layers, eager attention) under mu-P, and CompleteP in depth.

    python examples/hf_gpt2.py
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import hptransfer as hpt

from _train import train_steps, vocab_size

VOCAB = vocab_size()  # read before any meta-device block


def config(width: int, layers: int = 2) -> GPT2Config:
    return GPT2Config(n_embd=width, n_layer=layers, n_head=4, vocab_size=VOCAB, n_positions=64,
                      attn_implementation="eager", bos_token_id=0, eos_token_id=0)


def main() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        base = GPT2LMHeadModel(config(64))
    model = GPT2LMHeadModel(config(256))
    plan = hpt.parametrize(model, base, "mup")  # eager attention: the adapter scales each module's `scaling`
    print(plan)
    first, last = train_steps(model, lr=3e-3)
    print(f"width 256: loss {first:.3f} -> {last:.3f}")
    # depth: 8 layers over a 2-layer base; the plan's note gives the input multiplier CompleteP needs here
    with torch.device("meta"):
        shallow = GPT2LMHeadModel(config(64, layers=2))
    deep = GPT2LMHeadModel(config(64, layers=8))
    plan = hpt.parametrize(deep, shallow, "completep", multipliers={"input": 20})
    print(f"depth_mult {plan.depth_mult:g}, branch multiplier "
          f"{next(m.factor for m in plan.modules if m.kind == 'branch'):.4g}")
    first, last = train_steps(deep, lr=3e-3)
    print(f"depth 8: loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
