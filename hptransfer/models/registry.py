"""Build reference models by family name and parametrize them against their base (used by recipes)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import HptError
from ..parametrize import parametrize
from .native import GPT, MLP, ResMLP, ResNet
from .resnet import BasicBlock, Bottleneck, StandardResNet, branch_glob


class UnknownModelError(HptError, ValueError):
    """A model family name that is not registered."""


def _gpt(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    return GPT(d_model=width, n_layer=depth, **opts)


def _resmlp(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    return ResMLP(width, depth, **opts)


def _mlp(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    return MLP(width, depth=depth, **opts)


def _resnet(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    opts = dict(opts)
    return ResNet(width, depth, in_channels=opts.pop("d_in", 1), n_classes=opts.pop("d_out", 10), **opts)


def _standard_resnet(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    """torchvision's layout (hptransfer.models.resnet): three stages of ``width``, 2 ``width`` and 4 ``width``
    channels, ``depth`` blocks each; ``block``: "basic" or "bottleneck"."""
    opts = dict(opts)
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[opts.pop("block", "basic")]
    return StandardResNet(block, blocks=depth, stage_channels=(width, 2 * width, 4 * width),
                          in_channels=opts.pop("d_in", 1), classes=opts.pop("d_out", 10), **opts)


def _hf_llama(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    """A transformers Llama built from a config (needs the [hf] extra): 4 heads, 2 KV heads, MLP 2 x width."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as err:
        raise UnknownModelError("model family 'hf_llama' needs transformers: pip install 'hptransfer[hf]'") from err
    opts = dict(opts)
    config = LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
                         num_attention_heads=opts.pop("n_head", 4), num_key_value_heads=opts.pop("n_kv_head", 2),
                         vocab_size=opts.pop("vocab_size"), max_position_embeddings=opts.pop("block_size", 64),
                         attn_implementation=opts.pop("attn_implementation", "sdpa"), **opts)
    return LlamaForCausalLM(config)


LANGUAGE_MODELS = frozenset({"gpt", "hf_llama"})  # families that take token ids (vocab_size, block_size)

FAMILIES: dict[str, Callable[[int, int, dict[str, Any]], nn.Module]] = {
    "gpt": _gpt, "resmlp": _resmlp, "mlp": _mlp, "resnet": _resnet, "hf_llama": _hf_llama,
    "standard_resnet": _standard_resnet,
}
# what parametrize needs to know about a family that its modules do not say (residual branches for depth schemes)
PARAMETRIZE_OPTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "standard_resnet": lambda opts: {"branches": branch_glob(Bottleneck if opts.get("block") == "bottleneck"
                                                             else BasicBlock)},
}


def resolve_family(family: str) -> Callable[[int, int, dict[str, Any]], nn.Module]:
    """A registered family name, or ``package.module:function`` for your own ``builder(width, depth, options)``."""
    if family in FAMILIES:
        return FAMILIES[family]
    if ":" in family:
        module_name, _, attr = family.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UnknownModelError(f"model.family={family!r}: could not import {attr!r} from {module_name!r} "
                                    f"({err}); is the package on PYTHONPATH?") from err
        return builder
    raise UnknownModelError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)} or give "
                            "'package.module:builder' for your own builder(width, depth, options)")


@dataclass
class ModelSpec:
    """A model family at one size, with its base size: everything needed to build and parametrize it.

    ``parametrize_options`` go to hptransfer.parametrize (branches, readout, base_head_dim) for models that are
    not written with hptransfer.nn.
    """

    family: str
    width: int
    depth: int
    base_width: int
    base_depth: int
    options: dict[str, Any] = field(default_factory=dict)
    parametrize_options: dict[str, Any] = field(default_factory=dict)

    def build(self, width: int | None = None, depth: int | None = None, device: str | None = None) -> nn.Module:
        builder = resolve_family(self.family)
        with torch.device(device or "cpu"):
            return builder(width or self.width, depth or self.depth, dict(self.options))

    def parametrized(self, scheme: str, width: int | None = None, depth: int | None = None,
                     **kwargs: Any) -> nn.Module:
        """The model at (width, depth), parametrized against the base; a 2x-wide delta marks width dims.

        The base is built for real on the CPU (it is small), so its init is measured rather than inferred and the
        safety net compares against it; its draws come from a forked RNG, so the model's stream is unchanged."""
        model = self.build(width, depth)
        with torch.random.fork_rng(devices=[]):
            base = self.build(self.base_width, self.base_depth)
        delta = self.build(2 * self.base_width, self.base_depth, device="meta")
        family_options = PARAMETRIZE_OPTIONS[self.family](self.options) if self.family in PARAMETRIZE_OPTIONS else {}
        parametrize(model, base, scheme, delta=delta, **{**family_options, **self.parametrize_options, **kwargs})
        return model
