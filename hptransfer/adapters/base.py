"""What an adapter tells parametrize() about a model family, and how adapters are found.

An adapter reads one model (and its base) and returns a :class:`Structure`: the readout, the input layers, the
residual branches, the attention modules with the attribute that holds their logit scale, and the family's
own init stds. With that, parametrize() needs no globs, no ``base_head_dim`` and no real base for families it
knows, and it can refuse instead of guessing where a family hides something it cannot reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import HptError


class AdapterError(HptError, ValueError):
    """An adapter was named that does not exist, or does not fit the model it was given."""


@dataclass(frozen=True)
class AttentionSite:
    """One attention module whose logits are ``attribute * q.k`` (the attribute is a plain float).

    Attributes:
        module: the module's name in the model.
        attribute: the float attribute every attention implementation reads (``scaling`` in transformers).
        head_dim: the per-head width of q and k in this module.
    """

    module: str
    attribute: str
    head_dim: int


@dataclass(frozen=True)
class InitStd:
    """The std a family's own init gives one weight: at the base's shape and at the model's shape."""

    base: float
    model: float
    source: str


@dataclass
class Structure:
    """What an adapter found in one model (every name is a module or parameter name of the model).

    Attributes:
        adapter: the adapter's name (recorded in the Plan).
        readout: output layer module(s).
        inputs: embedding / input layer module(s).
        branches: residual-branch modules (their output is added to the stream); None when the family has
            none that a multiplier can reach (``branch_note`` says why).
        attention: attention modules with a scale attribute.
        init: the family's init std of each parameter it initializes with a random normal.
        example_inputs: builds a small input batch for a probe forward (None: not known).
        input_std: the family's init std of its embeddings (None: not known); the depth schemes with
            alpha > 1/2 need the embedding to carry the residual stream, and parametrize() advises from it.
    """

    adapter: str
    readout: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    branches: list[str] | None = None
    branch_note: str = ""
    attention: list[AttentionSite] = field(default_factory=list)
    init: dict[str, InitStd] = field(default_factory=dict)
    example_inputs: Callable[[], Any] | None = None
    input_std: float | None = None


class Adapter:
    """A model family: ``matches`` picks it automatically from the model's class; ``describe`` reads a model."""

    name: str = ""

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def describe(self, model: nn.Module, base: Any, shapes: Any) -> Structure:
        raise NotImplementedError


ADAPTERS: list[Adapter] = []


def register(adapter: Adapter) -> Adapter:
    """Add an adapter to those parametrize() tries (the most specific first: registered later, tried first)."""
    ADAPTERS.insert(0, adapter)
    return adapter


def available() -> list[str]:
    _load_builtin()
    return [a.name for a in ADAPTERS]


def _load_builtin() -> None:
    from . import hf  # noqa: F401  (registers the transformers families when transformers is installed)


def find_adapter(model: nn.Module, choice: str | Adapter | None = "auto") -> Adapter | None:
    """The adapter for ``model``: ``"auto"`` picks by class, a name or an Adapter forces one, None uses none."""
    if choice is None or choice == "none":
        return None
    if isinstance(choice, Adapter):
        return choice
    _load_builtin()
    if choice == "auto":
        return next((a for a in ADAPTERS if a.matches(model)), None)
    for adapter in ADAPTERS:
        if adapter.name == choice:
            if not adapter.matches(model):
                raise AdapterError(f"adapter {choice!r} does not fit a {type(model).__name__}; use adapter='auto' "
                                   f"or one of {available()}")
            return adapter
    raise AdapterError(f"unknown adapter {choice!r}; known: {available()} (or 'auto', or None for none)")
