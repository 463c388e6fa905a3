"""Tiny transformers models built from configs (no downloads) and a measurement of the applied attention scale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")

VOCAB = 128


def llama(width: int, layers: int = 2, impl: str = "sdpa", heads: int = 4, **extra) -> torch.nn.Module:
    config = transformers.LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                                      num_attention_heads=heads, num_key_value_heads=heads // 2, vocab_size=VOCAB,
                                      max_position_embeddings=64, attn_implementation=impl, **extra)
    return transformers.LlamaForCausalLM(config)


def gpt2(width: int, layers: int = 2, impl: str = "sdpa", heads: int = 4) -> torch.nn.Module:
    config = transformers.GPT2Config(n_embd=width, n_layer=layers, n_head=heads, vocab_size=VOCAB, n_positions=64,
                                      attn_implementation=impl, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def bert(width: int, layers: int = 2, impl: str = "sdpa", heads: int = 4) -> torch.nn.Module:
    config = transformers.BertConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                     num_attention_heads=heads, vocab_size=VOCAB, max_position_embeddings=64,
                                     attn_implementation=impl, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertForMaskedLM(config)


FAMILIES = {"llama": llama, "gpt2": gpt2}


def meta(builder, *args, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return builder(*args, **kwargs)


def token_batches(batch: int = 2, seq: int = 16, seed: int = 0):
    """A new random (inputs, next tokens) batch per step."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield (torch.randint(0, VOCAB, (batch, seq), generator=generator),
               torch.randint(0, VOCAB, (batch, seq), generator=generator))


class MeasureLogitScale(TorchFunctionMode):
    """Measures the scale eager attention applies: softmax input / (q @ k^T), on the entries the mask keeps.

    Records every product of two >= 3-d activations and, at each softmax, divides its input by the most recent
    product of the same shape (the mask adds 0 or -inf, so finite entries give the ratio exactly).
    """

    def __init__(self) -> None:
        super().__init__()
        self.products: list[torch.Tensor] = []
        self.scales: list[float] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__) and all(
                isinstance(a, torch.Tensor) and a.dim() >= 3 and not isinstance(a, torch.nn.Parameter)
                for a in args[:2]):
            self.products.append(out.detach())
        if func in (F.softmax, torch.softmax, torch.Tensor.softmax):
            logits = args[0].detach().float()
            product = next(p for p in reversed(self.products) if p.shape == logits.shape).float()
            keep = torch.isfinite(logits) & (product.abs() > 1e-6) & (logits > -1e4)
            ratio = logits[keep] / product[keep]
            self.scales.append(float(ratio.median()))
        return out
