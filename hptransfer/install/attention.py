"""Rescaling SDPA calls that no attribute reaches: a torch-function mode active during the model's forward.

Per module that runs such calls, the factor parametrize() measured (its target scale over the scale the call
applies). Hooks on those modules keep a stack of factors; modules whose calls an attribute already scales push
None so nested calls are left alone. ``flex_attention`` is not rescaled here: it runs its operator inside a
compiled wrapper even in eager mode, where a mode's change of arguments does not reach it (measured: the output
kept the old scale); its scale must sit in an attribute.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

SDPA = F.scaled_dot_product_attention


class AttentionScaleMode(TorchFunctionMode):
    """Multiplies the ``scale`` of SDPA calls by the factor on top of the scope's stack."""

    def __init__(self, scope: "AttentionScope") -> None:
        super().__init__()
        self.scope = scope

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is SDPA and self.scope.stack and self.scope.stack[-1] is not None:
            scale = kwargs.get("scale")
            scale = args[0].shape[-1] ** -0.5 if scale is None else scale
            kwargs = dict(kwargs, scale=scale * self.scope.stack[-1])
        return func(*args, **kwargs)


class AttentionScope:
    """The hooks that run AttentionScaleMode: ``factors`` maps a module name ("" for the root) to the factor on
    its own SDPA calls, or None for a module whose calls are scaled otherwise (an attribute, a native layer)."""

    def __init__(self, factors: Mapping[str, float | None]) -> None:
        self.factors: dict[str, float | None] = {}
        self.stack: list[float | None] = []
        self.handles: list[Any] = []
        self.enabled = True
        self._root: nn.Module | None = None
        self._active: list[AttentionScaleMode] = []
        self._pending = dict(factors)

    def install(self, root: nn.Module) -> list[Any]:
        """Hook the root (entering the mode) and every module with a factor; returns the handles."""
        self._root = root
        self.handles.append(root.register_forward_pre_hook(self._enter))
        self.handles.append(root.register_forward_hook(self._exit, always_call=True))
        self.add(self._pending)
        return self.handles

    def add(self, factors: Mapping[str, float | None]) -> list[Any]:
        """Give more modules their factor (a model whose attention is measured on its first forward)."""
        modules = dict(self._root.named_modules()) if self._root is not None else {}
        new = []
        for name, factor in factors.items():
            known = name in self.factors
            self.factors[name] = factor
            if name and not known:
                new.append(modules[name].register_forward_pre_hook(self._push(name)))
                new.append(modules[name].register_forward_hook(self._pop, always_call=True))
        self.handles += new
        return new

    def disable(self) -> None:
        """Stop rescaling and remove the hooks (nothing needs them)."""
        self.enabled = False
        for handle in self.handles:
            handle.remove()

    def _enter(self, module: nn.Module, args: Any) -> None:
        if not self.enabled:
            return
        mode = AttentionScaleMode(self)
        mode.__enter__()
        self._active.append(mode)
        self.stack.append(self.factors.get(""))

    def _exit(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self._active:
            return
        self.stack.pop()
        self._active.pop().__exit__(None, None, None)

    def _push(self, name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: Any) -> None:
            if self._active:
                self.stack.append(self.factors.get(name))
        return hook

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._active and len(self.stack) > 1:
            self.stack.pop()
