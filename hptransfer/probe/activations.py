"""The rms of every module's output (and of chosen modules' inputs) in one probe forward.

mu-P predicts these at init: a hidden activation has the base's rms at every width, so comparing a
parametrized model's values with its base's (hptransfer.check) finds a constant in the forward that grows with
width (an embedding times sqrt(d_model), a head times d_model^-1/2) or an init the rules did not reach.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first floating tensor in a module's output (a tensor, a tuple/list, a dict or a ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    return None


def rms(t: torch.Tensor) -> float:
    """Root mean square of a tensor (nan for an empty or meta tensor)."""
    if t.is_meta or t.numel() == 0:
        return math.nan
    return float(t.detach().float().pow(2).mean().sqrt())


class ActivationRecorder:
    """Forward hooks that record, per module name, the rms of its output (first call only) and, for
    ``inputs_of``, the rms of its first input before any of hptransfer's multipliers."""

    def __init__(self, root: nn.Module, modules: Iterable[str], inputs_of: Iterable[str] = ()) -> None:
        named = dict(root.named_modules())
        self.outputs: dict[str, float] = {}
        self.inputs: dict[str, float] = {}
        self.timeline: list[tuple[str, str]] = []  # ("input" | "output", module) in the order they were seen
        self._handles = []
        for name in modules:
            if name in named:
                self._handles.append(named[name].register_forward_hook(self._output_hook(name)))
        for name in inputs_of:
            if name in named:
                self._handles.append(named[name].register_forward_pre_hook(self._input_hook(name), prepend=True))

    def _output_hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is not None and name not in self.outputs:
                self.outputs[name] = rms(t)
                self.timeline.append(("output", name))
        return hook

    def _input_hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: Any) -> None:
            t = first_tensor(args)
            if t is not None and name not in self.inputs:
                self.inputs[name] = rms(t)
                self.timeline.append(("input", name))
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "ActivationRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
