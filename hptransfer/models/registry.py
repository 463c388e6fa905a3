"""Build reference models by family name and parametrize them against their base (used by recipes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import HptError
from ..parametrize import parametrize
from .native import GPT, MLP, ResMLP


class UnknownModelError(HptError, ValueError):
    """A model family name that is not registered."""


def _gpt(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    return GPT(d_model=width, n_layer=depth, **opts)


def _resmlp(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    return ResMLP(width, depth, **opts)


def _mlp(width: int, depth: int, opts: dict[str, Any]) -> nn.Module:
    return MLP(width, depth=depth, **opts)


FAMILIES: dict[str, Callable[[int, int, dict[str, Any]], nn.Module]] = {
    "gpt": _gpt, "resmlp": _resmlp, "mlp": _mlp,
}


@dataclass
class ModelSpec:
    """A model family at one size, with its base size: everything needed to build and parametrize it."""

    family: str
    width: int
    depth: int
    base_width: int
    base_depth: int
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, width: int | None = None, depth: int | None = None, device: str | None = None) -> nn.Module:
        if self.family not in FAMILIES:
            raise UnknownModelError(f"unknown model family {self.family!r}; choose one of {sorted(FAMILIES)}")
        with torch.device(device or "cpu"):
            return FAMILIES[self.family](width or self.width, depth or self.depth, dict(self.options))

    def parametrized(self, scheme: str, width: int | None = None, depth: int | None = None,
                     **kwargs: Any) -> nn.Module:
        """The model at (width, depth), parametrized against the base; a 2x-wide delta marks width dims."""
        model = self.build(width, depth)
        base = self.build(self.base_width, self.base_depth, device="meta")
        delta = self.build(2 * self.base_width, self.base_depth, device="meta")
        parametrize(model, base, scheme, delta=delta, **kwargs)
        return model
