"""A transformers Llama (the Llama family: Llama, Qwen2/3, Mistral, with GQA) under mu-P, and a checkpoint.

    python examples/hf_llama.py

The base is the proxy's config on the meta device (free); the adapter, picked from the class, finds the
readout, branches and attention modules, reads the base head dim and the init (initializer_range) from it.
Then the model is saved, loaded with from_pretrained and parametrized with init="keep" to continue training.
"""

from __future__ import annotations

import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hptransfer as hpt

from _train import train_steps, vocab_size

VOCAB = vocab_size()  # read before any meta-device block


def config(width: int) -> LlamaConfig:
    return LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64)


def main() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        base = LlamaForCausalLM(config(64))  # the proxy you tuned
    model = LlamaForCausalLM(config(256))  # the model you train: 4x wider
    plan = hpt.parametrize(model, base, "mup")
    print(plan)
    first, last = train_steps(model, lr=3e-3)  # the LR tuned on the proxy
    print(f"loss {first:.3f} -> {last:.3f}")
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        resumed = LlamaForCausalLM.from_pretrained(folder)
        hpt.parametrize(resumed, base, "mup", init="keep")  # keep the trained weights
        first, last = train_steps(resumed, lr=3e-3, steps=5)
        print(f"resumed from a checkpoint (with a fresh optimizer): loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
