"""A transformers BERT encoder (masked LM) under mu-P in width. BERT is post-LN, so depth schemes refuse it.

    python examples/hf_bert.py
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM

import hptransfer as hpt

from _train import train_steps, vocab_size

VOCAB = vocab_size()  # read before any meta-device block


def config(width: int, layers: int = 2) -> BertConfig:
    return BertConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=4,
                      vocab_size=VOCAB, max_position_embeddings=64)


def main() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        base = BertForMaskedLM(config(64))
    model = BertForMaskedLM(config(256))
    plan = hpt.parametrize(model, base, "mup")
    print(plan)
    first, last = train_steps(model, lr=1e-3)  # (next-character targets: a smoke run, not masked LM)
    print(f"loss {first:.3f} -> {last:.3f}")
    try:
        hpt.parametrize(BertForMaskedLM(config(64, layers=4)), base, "completep")
    except hpt.BranchError as err:
        print(f"completep refused: {err}")


if __name__ == "__main__":
    main()
