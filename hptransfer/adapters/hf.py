"""Hugging Face ``transformers`` families: GPT-2, the Llama family (Llama, Qwen2/3, Mistral) and BERT.

Every ``transformers`` attention module keeps its logit scale in a float attribute ``scaling`` and passes it
to whichever attention implementation the config picks (eager, sdpa, flash, flex), so scaling that attribute
reaches all of them. The families' own init is N(0, config.initializer_range) for every Linear, Conv1D and
Embedding weight (GPT-2 divides its ``c_proj`` weights by sqrt(2 n_layer)); norms start at one, biases at zero.
Any other ``transformers`` model gets the generic part (readout, inputs, attention) but no branches and no
init law: parametrize then measures a real base or refuses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attention import head_dim_of
from ..shapes import BaseShapes
from .base import Adapter, AttentionSite, InitStd, Structure, register

try:  # transformers is an optional extra ([hf]); without it these adapters never match
    from transformers import PreTrainedModel
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - exercised only where transformers is missing
    PreTrainedModel = None
    Conv1D = None

HEAD_NAMES = ("classifier", "score", "qa_outputs")


@dataclass(frozen=True)
class Family:
    """One family's layout, as data.

    Attributes:
        name: adapter name. model_types: the ``config.model_type`` values it covers.
        layers: regex of the residual layers' module names (the ModuleList entries).
        branches: the layer's children whose output is added to the residual stream (empty: none reachable).
        branch_note: why depth rules cannot be applied when ``branches`` is empty.
        depth_scaled_init: weights (names relative to a layer) drawn with std initializer_range / sqrt(2 n_layer).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    branches: tuple[str, ...]
    branch_note: str = ""
    depth_scaled_init: tuple[str, ...] = ()


FAMILIES = (
    Family("gpt2", ("gpt2",), r"(?:^|\.)h\.\d+$", ("attn", "mlp"),
           depth_scaled_init=("attn.c_proj.weight", "mlp.c_proj.weight")),
    Family("llama", ("llama", "qwen2", "qwen3", "mistral"), r"(?:^|\.)layers\.\d+$", ("self_attn", "mlp")),
    Family("bert", ("bert",), r"(?:^|\.)encoder\.layer\.\d+$", (),
           branch_note="BERT is post-LN (LayerNorm(x + branch(x)) inside BertSelfOutput/BertOutput): no module's "
                       "output is added to a residual stream, so depth multipliers cannot be applied. Use a "
                       "width scheme ('mup' or 'sp') for BERT."),
)


def _module_name(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    return next((n for n, m in model.named_modules() if m is target), None)


class TransformersAdapter(Adapter):
    """Any ``transformers`` PreTrainedModel: readout, inputs and ``scaling`` attention; a Family adds the rest."""

    def __init__(self, family: Family | None = None) -> None:
        self.family = family
        self.name = f"transformers:{family.name}" if family else "transformers"

    def matches(self, model: nn.Module) -> bool:
        if PreTrainedModel is None or not isinstance(model, PreTrainedModel):
            return False
        return self.family is None or getattr(model.config, "model_type", None) in self.family.model_types

    def describe(self, model: nn.Module, base: Any, shapes: BaseShapes) -> Structure:
        structure = Structure(self.name)
        readout = _module_name(model, model.get_output_embeddings())
        if readout is None:
            names = dict(model.named_modules())
            readout = next((n for n in names if n.rpartition(".")[2] in HEAD_NAMES
                            and isinstance(names[n], nn.Linear)), None)
        structure.readout = [readout] if readout else []
        structure.inputs = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
        structure.attention = [AttentionSite(n, "scaling", head_dim_of(m)) for n, m in model.named_modules()
                               if "Attention" in type(m).__name__ and isinstance(getattr(m, "scaling", None), float)
                               and head_dim_of(m) is not None]
        vocab = int(getattr(model.config, "vocab_size", 0) or 0)
        if vocab:
            device = next(model.parameters()).device

            def example_inputs() -> torch.Tensor:
                generator = torch.Generator().manual_seed(0)
                return torch.randint(0, vocab, (2, 8), generator=generator).to(device)

            structure.example_inputs = example_inputs
        if self.family is None:
            structure.branch_note = (f"hptransfer knows no residual layout for model_type "
                                     f"{getattr(model.config, 'model_type', '?')!r}; pass branches=[...] globs")
            return structure
        layers = [n for n, _ in model.named_modules() if re.search(self.family.layers, n)]
        modules = dict(model.named_modules())
        if self.family.branches:
            structure.branches = [f"{layer}.{b}" for layer in layers for b in self.family.branches
                                  if f"{layer}.{b}" in modules]
        else:
            structure.branch_note = self.family.branch_note
        structure.init = self._init_stds(model, base, shapes, layers)
        input_std = getattr(model.config, "initializer_range", None)
        structure.input_std = float(input_std) if isinstance(input_std, (int, float)) and input_std > 0 else None
        return structure

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
        kinds = (nn.Linear, nn.Embedding) + ((Conv1D,) if Conv1D is not None else ())
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


if PreTrainedModel is not None:
    register(TransformersAdapter())  # the generic fallback, tried last
    for _family in FAMILIES:
        register(TransformersAdapter(_family))
