"""Installing a Plan's forward side on a model, and removing it: multipliers, attention scales, constants.

The one place that changes a model's forward (install.init changes its weights). Everything it sets is
recorded on the model so ``uninstall`` can put it back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import nn as hnn
from ..plan import Plan
from .attention import AttentionScope

HOOKS_ATTR = "_hpt_hooks"
ORIGINALS_ATTR = "_hpt_originals"  # (module name, attribute) -> the value before install
SCOPE_ATTR = "_hpt_attention_scope"


class ScaleOutput:
    """Forward hook: multiply a module's output (or the first element of a tuple output) by a constant."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output * self.factor
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (output[0] * self.factor,) + output[1:]
        raise TypeError(f"hptransfer cannot scale an output of type {type(output).__name__}; "
                        "wrap the branch so it returns a tensor")


class ScaleInput:
    """Forward pre-hook: multiply a module's first positional input by a constant (mup's readout form)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * self.factor,) + tuple(args[1:])


def get_value(module: nn.Module, attribute: str) -> Any:
    value = getattr(module, attribute)
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def set_value(module: nn.Module, attribute: str, value: Any) -> None:
    """Set a float/int attribute, or fill a 0-d tensor buffer in place (its dtype and device kept)."""
    current = getattr(module, attribute)
    if isinstance(current, torch.Tensor):
        with torch.no_grad():
            current.fill_(float(value) if not isinstance(value, torch.Tensor) else value.to(current.dtype))
    elif isinstance(current, int) and not isinstance(current, bool) and isinstance(value, (int, float)):
        setattr(module, attribute, int(round(value)) if float(value).is_integer() else value)
    else:
        setattr(module, attribute, value)


def install(root: nn.Module, plan: Plan, attention_pending: bool = False) -> list[Any]:
    """Apply every ModuleRecord of the plan to ``root``; returns the hook handles (also kept on the model).

    Args:
        attention_pending: the attention records come later (measured on the first forward, ``add_attention``):
            the SDPA rescaling hooks are set up now, so that forward already runs under them.
    """
    modules = dict(root.named_modules())
    handles: list[Any] = []
    setattr(root, ORIGINALS_ATTR, {})
    setattr(root, HOOKS_ATTR, handles)
    for rec in plan.modules:
        module = modules[rec.name]
        if rec.kind == "constant":  # a family's width-dependent constant, set to its value at the base's width
            _set_recorded(root, module, rec.name, rec.attribute, rec.value)
        elif rec.kind in ("attention", "native_attention"):
            continue
        elif rec.kind == "readout" and isinstance(module, (hnn.Readout, hnn.TiedReadout)):
            module.multiplier = rec.factor
        elif rec.kind == "branch" and isinstance(module, hnn.Residual):
            module.multiplier = rec.factor
        elif rec.factor != 1.0:
            hook = ScaleInput(rec.factor) if rec.kind == "readout" else ScaleOutput(rec.factor)
            handles.append(module.register_forward_pre_hook(hook) if rec.kind == "readout"
                           else module.register_forward_hook(hook))
    records = [r for r in plan.modules if r.kind in ("attention", "native_attention")]
    if attention_pending:
        scope = AttentionScope({})
        handles += scope.install(root)
        setattr(root, SCOPE_ATTR, scope)
    add_attention(root, records)
    return handles


def _set_recorded(root: nn.Module, module: nn.Module, name: str, attribute: str, value: Any) -> None:
    originals = getattr(root, ORIGINALS_ATTR)
    originals.setdefault((name, attribute), get_value(module, attribute))
    set_value(module, attribute, value)


def add_attention(root: nn.Module, records: list[Any]) -> None:
    """Apply attention records: scale attributes, native layers' factors, and SDPA rescaling per module."""
    modules = dict(root.named_modules())
    intercept: dict[str, float | None] = {}
    for rec in records:
        module = modules[rec.name]
        if rec.kind == "native_attention":
            module.logit_scale_factor = rec.factor
            intercept[rec.name] = None
        elif rec.attribute is not None:
            if rec.value is not None or rec.factor != 1.0:
                value = rec.value if rec.value is not None else float(getattr(module, rec.attribute)) * rec.factor
                _set_recorded(root, module, rec.name, rec.attribute, value)
            intercept[rec.name] = None
        else:
            intercept[rec.name] = rec.factor
    scope = getattr(root, SCOPE_ATTR, None)
    needed = any(f is not None and f != 1.0 for f in intercept.values())
    if scope is None and needed:
        scope = AttentionScope({})
        getattr(root, HOOKS_ATTR).extend(scope.install(root))
        setattr(root, SCOPE_ATTR, scope)
    if scope is not None:
        getattr(root, HOOKS_ATTR).extend(scope.add(intercept))
        if not any(f is not None and f != 1.0 for f in scope.factors.values()):
            scope.disable()


def uninstall(root: nn.Module) -> None:
    """Remove what ``install`` added: hooks, attention scales, constants, native layers' multipliers."""
    for handle in getattr(root, HOOKS_ATTR, []):
        handle.remove()
    modules = dict(root.named_modules())
    for (name, attribute), value in getattr(root, ORIGINALS_ATTR, {}).items():
        set_value(modules[name], attribute, value)
    for module in root.modules():
        if isinstance(module, (hnn.Readout, hnn.TiedReadout, hnn.Residual)):
            module.multiplier = 1.0
        if isinstance(module, hnn.SelfAttention):
            module.logit_scale_factor = 1.0
    for attr in (HOOKS_ATTR, ORIGINALS_ATTR, SCOPE_ATTR):
        if hasattr(root, attr):
            delattr(root, attr)


def native_factor(attn: float, base_head_dim: int | None, head_dim: int) -> float:
    """hptransfer.nn.SelfAttention's logit_scale_factor: on its 1/sqrt(d), mu-P's ``attn * sqrt(d0) / d``."""
    return attn if base_head_dim is None else attn * math.sqrt(base_head_dim / head_dim)
