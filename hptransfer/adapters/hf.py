"""Hugging Face ``transformers`` families.

What hptransfer measures needs no family knowledge: which dims each weight contracts, every attention call's
head dim and scale, and the attribute that sets it (``scaling`` in most families, found by changing it). What the
adapter adds:

- probe inputs: token ids, and ``decoder_input_ids`` for encoder-decoders (T5, BART);
- the base with its real init, rebuilt on the CPU from the base's config (a meta base is enough);
- the residual layout of the families below (depth schemes);
- the init law N(0, initializer_range) of the families that use it (a meta base then needs no rebuild, and
  weights that are not a fresh init are recognised);
- width-dependent constants of the forward, set to their value at the base's width: an embedding scaled by
  sqrt(hidden) (Gemma, BART with scale_embedding), T5's d_model^-1/2 before its tied head.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..structure.shapes import BaseShapes
from .base import Adapter, Constant, InitStd, Knowledge, register

def _is_transformers_model(model: nn.Module) -> bool:
    """A transformers PreTrainedModel. transformers (the optional [hf] extra) is imported only for a model whose
    class comes from it: importing it costs seconds that no other model should pay."""
    if not any(cls.__module__.startswith("transformers.") for cls in type(model).__mro__):
        return False
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - a transformers class without transformers installed
        return False
    return isinstance(model, PreTrainedModel)


def _conv1d() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return None
    return Conv1D

HEAD_NAMES = ("classifier", "score", "qa_outputs")
EMBED_SCALES = ("scalar_embed_scale", "embed_scale")  # Gemma keeps a float and a 0-d buffer; BART a float


@dataclass(frozen=True)
class Family:
    """One family's layout, as data.

    Attributes:
        name: adapter name. model_types: the ``config.model_type`` values it covers.
        layers: regex of the residual layers' module names (the ModuleList entries).
        branches: globs (relative to a layer) of the modules whose output is added to the residual stream;
            empty: none reachable (``branch_note`` says why).
        depth_scaled_init: weights (names relative to a layer) drawn with std initializer_range / sqrt(2 n_layer).
        initializer_range: the family draws its matrices from N(0, config.initializer_range).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    branches: tuple[str, ...]
    branch_note: str = ""
    depth_scaled_init: tuple[str, ...] = ()
    initializer_range: bool = True


POST_LN = ("is post-LN (LayerNorm(x + branch(x))): no module's output is added to a residual stream, so depth "
           "multipliers cannot be applied. Use a width scheme ('mup' or 'sp').")
FAMILIES = (
    Family("gpt2", ("gpt2",), r"(?:^|\.)h\.\d+$", ("attn", "mlp"),
           depth_scaled_init=("attn.c_proj.weight", "mlp.c_proj.weight")),
    Family("llama", ("llama", "qwen2", "qwen3", "mistral", "gemma", "granite", "mixtral", "qwen2_moe",
                     "qwen3_moe", "olmo", "phi3"), r"(?:^|\.)layers\.\d+$", ("self_attn", "mlp")),
    # Gemma 2 and 3 normalize each branch's output before adding it: the norm's output is the branch
    Family("gemma2", ("gemma2", "gemma3_text", "gemma3"), r"(?:^|\.)layers\.\d+$",
           ("post_attention_layernorm", "post_feedforward_layernorm")),
    Family("gpt_neox", ("gpt_neox",), r"(?:^|\.)layers\.\d+$", ("attention", "mlp")),
    Family("opt", ("opt",), r"(?:^|\.)layers\.\d+$", ("self_attn", "fc2"), initializer_range=False),
    Family("t5", ("t5",), r"(?:^|\.)block\.\d+$", ("layer.*.SelfAttention", "layer.*.EncDecAttention",
                                                  "layer.*.DenseReluDense"), initializer_range=False),
    Family("bert", ("bert",), r"(?:^|\.)encoder\.layer\.\d+$", (), branch_note="BERT " + POST_LN),
    Family("bart", ("bart",), r"(?:^|\.)layers\.\d+$", (), branch_note="BART " + POST_LN, initializer_range=False),
)


def _module_name(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    return next((n for n, m in model.named_modules() if m is target), None)


def _matches(name: str, glob: str) -> bool:
    return re.fullmatch(glob.replace(".", r"\.").replace("*", r"[^.]*"), name) is not None


class TransformersAdapter(Adapter):
    """Any ``transformers`` PreTrainedModel (probe inputs, base rebuild, constants); a Family adds the rest."""

    def __init__(self, family: Family | None = None) -> None:
        self.family = family
        self.name = f"transformers:{family.name}" if family else "transformers"

    def matches(self, model: nn.Module) -> bool:
        if not _is_transformers_model(model):
            return False
        return self.family is None or getattr(model.config, "model_type", None) in self.family.model_types

    def describe(self, model: nn.Module, base: Any, shapes: BaseShapes) -> Knowledge:
        knowledge = Knowledge(self.name)
        readout = _module_name(model, model.get_output_embeddings())
        if readout is None:
            names = dict(model.named_modules())
            readout = next((n for n in names if n.rpartition(".")[2] in HEAD_NAMES
                            and isinstance(names[n], nn.Linear)), None)
        knowledge.readout = [readout] if readout else []
        knowledge.inputs = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)
                            and n.rpartition(".")[2] != "relative_attention_bias"]
        knowledge.example_inputs = self._example_inputs(model)
        if isinstance(base, nn.Module) and _is_transformers_model(base):
            knowledge.rebuild_base = lambda: _rebuild(base)
            knowledge.constants = _constants(model, base)
        if self.family is None:
            knowledge.branch_note = (f"hptransfer knows no residual layout for model_type "
                                     f"{getattr(model.config, 'model_type', '?')!r}; pass branches=[...] globs")
            return knowledge
        layers = [n for n, _ in model.named_modules() if re.search(self.family.layers, n)]
        modules = dict(model.named_modules())
        if self.family.branches:
            knowledge.branches = [name for layer in layers for name in modules
                                  if name.startswith(layer + ".")
                                  and any(_matches(name[len(layer) + 1:], g) for g in self.family.branches)]
        else:
            knowledge.branch_note = self.family.branch_note
        if self.family.initializer_range:
            knowledge.init = self._init_stds(model, base, shapes, layers)
            input_std = getattr(model.config, "initializer_range", None)
            knowledge.input_std = float(input_std) if isinstance(input_std, (int, float)) and input_std > 0 else None
        return knowledge

    @staticmethod
    def _example_inputs(model: nn.Module) -> Any:
        vocab = int(getattr(model.config, "vocab_size", 0) or 0)
        if not vocab:
            return None
        device = next(model.parameters()).device
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))

        def example_inputs() -> Any:
            generator = torch.Generator().manual_seed(0)
            ids = torch.randint(0, vocab, (2, 8), generator=generator).to(device)
            if encoder_decoder:
                return {"input_ids": ids, "decoder_input_ids": torch.randint(0, vocab, (2, 8),
                                                                             generator=generator).to(device)}
            return ids

        return example_inputs

    def _init_stds(self, model: nn.Module, base: Any, shapes: BaseShapes, layers: list[str]) -> dict[str, InitStd]:
        config = model.config
        std = getattr(config, "initializer_range", None)
        if not isinstance(std, (int, float)) or std <= 0:
            return {}
        base_config = getattr(base, "config", None)
        base_std = float(getattr(base_config, "initializer_range", std) or std)
        n_layer = len(layers)
        base_layers = {m for m in shapes.modules if re.search(self.family.layers, m)}
        base_n_layer = len(base_layers) or n_layer
        stds: dict[str, InitStd] = {}
        conv1d = _conv1d()
        kinds = (nn.Linear, nn.Embedding) + ((conv1d,) if conv1d is not None else ())
        source = f"{self.name} init N(0, initializer_range={base_std:g})"
        for name, module in model.named_modules():
            if isinstance(module, kinds) and getattr(module, "weight", None) is not None:
                stds[f"{name}.weight"] = InitStd(base_std, float(std), source)
        for layer in layers:
            for rel in self.family.depth_scaled_init:
                key = f"{layer}.{rel}"
                if key in stds:
                    stds[key] = InitStd(base_std / math.sqrt(2 * base_n_layer), std / math.sqrt(2 * n_layer),
                                        f"{source} / sqrt(2 n_layer) with the base's n_layer={base_n_layer}")
        return stds


def _rebuild(base: nn.Module) -> nn.Module:
    """The base built again on the CPU from its config: the family's own init, buffers included."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(0)
        rebuilt = type(base)(base.config)
    return rebuilt


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_meta:
        return float(value)
    return None


def _constants(model: nn.Module, base: nn.Module) -> list[Constant]:
    """The family's width-dependent constants, read from the base's own modules (its code computed them at the
    base's width)."""
    constants = []
    base_modules = dict(base.named_modules())
    for name, module in model.named_modules():
        base_module = base_modules.get(name)
        if base_module is None or not isinstance(module, nn.Embedding):
            continue
        base_value = next((v for a in EMBED_SCALES if (v := _scalar(getattr(base_module, a, None))) is not None), None)
        for attribute in EMBED_SCALES:
            value = getattr(module, attribute, None)
            zero_dim = isinstance(value, torch.Tensor) and value.dim() == 0
            if base_value is None or value is None or not (_scalar(value) is not None or zero_dim):
                continue
            constants.append(Constant(name, attribute, base_value,
                                      "the embedding is multiplied by sqrt(hidden size): kept at the base's value"))
    if getattr(model.config, "scale_decoder_outputs", False) and isinstance(getattr(model, "model_dim", None), int):
        constants.append(Constant("", "model_dim", float(base.model_dim),
                                  "T5 multiplies the decoder output by d_model^-1/2 before its tied head: kept at the "
                                  "base's d_model (the readout's 1/width multiplier does the rest)"))
    return constants


register(TransformersAdapter())  # the generic fallback, tried last
for _family in FAMILIES:
    register(TransformersAdapter(_family))
