"""What an adapter tells parametrize() about a model family, and how adapters are found.

Most of a model's structure is measured (hptransfer.probe, hptransfer.structure). An adapter adds what cannot
be: where the residual branches are, the family's init law (so a meta base suffices), inputs for a probe
forward, constants in the family's forward that depend on the width (set back to the base's value), and how
to rebuild the base with its real init for the safety net.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import HptError


class AdapterError(HptError, ValueError):
    """An adapter was named that does not exist, or does not fit the model it was given."""


@dataclass(frozen=True)
class InitStd:
    """The std a family's own init gives one weight: at the base's shape and at the model's shape."""

    base: float
    model: float
    source: str


@dataclass(frozen=True)
class Constant:
    """A width-dependent constant of the family's forward, held in ``attribute`` of ``module``: parametrize() sets
    it to ``base_value`` (its value at the base's width), so the forward no longer changes with width."""

    module: str
    attribute: str
    base_value: float
    why: str


@dataclass
class Knowledge:
    """What an adapter knows about one model (every name is a module or parameter name of the model).

    Attributes:
        adapter: the adapter's name (recorded in the Plan).
        readout: output layer module(s) that take the tunable output multiplier.
        inputs: embedding / input layer module(s).
        branches: residual-branch modules (their output is added to the stream); None when the family has
            none that a multiplier can reach (``branch_note`` says why).
        init: the family's init std of each parameter it initializes with a random normal.
        example_inputs: builds a small input batch for a probe forward (None: not known).
        input_std: the family's init std of its embeddings (None: not known).
        constants: width-dependent constants of the forward, to be set to their base values.
        rebuild_base: builds the base on the CPU with the family's own init (None: not known).
    """

    adapter: str
    readout: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    branches: list[str] | None = None
    branch_note: str = ""
    init: dict[str, InitStd] = field(default_factory=dict)
    example_inputs: Callable[[], Any] | None = None
    input_std: float | None = None
    constants: list[Constant] = field(default_factory=list)
    rebuild_base: Callable[[], nn.Module] | None = None


class Adapter:
    """A model family: ``matches`` picks it automatically from the model's class; ``describe`` reads a model."""

    name: str = ""

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def describe(self, model: nn.Module, base: Any, shapes: Any) -> Knowledge:
        raise NotImplementedError


ADAPTERS: list[Adapter] = []


def register(adapter: Adapter) -> Adapter:
    """Add an adapter to those parametrize() tries (the most specific first: registered later, tried first)."""
    ADAPTERS.insert(0, adapter)
    return adapter


def available() -> list[str]:
    return [a.name for a in ADAPTERS]


def find_adapter(model: nn.Module, choice: str | Adapter | None = "auto") -> Adapter | None:
    """The adapter for ``model``: ``"auto"`` picks by class, a name or an Adapter forces one, None uses none."""
    if choice is None or choice == "none":
        return None
    if isinstance(choice, Adapter):
        return choice
    if choice == "auto":
        return next((a for a in ADAPTERS if a.matches(model)), None)
    for adapter in ADAPTERS:
        if adapter.name == choice:
            if not adapter.matches(model):
                raise AdapterError(f"adapter {choice!r} does not fit a {type(model).__name__}; use adapter='auto' "
                                   f"or one of {available()}")
            return adapter
    raise AdapterError(f"unknown adapter {choice!r}; known: {available()} (or 'auto', or None for none)")
