"""Attention logits under mu-P: scaling them wherever they are computed, and finding the places we cannot.

mu-P wants attention logits ``attn * sqrt(d0) * q.k / d`` (TP5 App. B.1: 1/d instead of 1/sqrt(d), pinned to the
base's head dim d0), i.e. the model's own ``1/sqrt(d)`` times ``attn * sqrt(d0 / d)``. Three mechanisms reach it:

- attention modules whose scale is a float attribute (``transformers``' ``scaling``, or one the user names):
  the attribute is multiplied once, so every attention implementation that reads it gets the new scale;
- ``F.scaled_dot_product_attention`` calls elsewhere: a TorchFunctionMode active during the model's forward
  rescales their ``scale`` argument (``flex_attention`` calls cannot be reached that way; they are found and
  need their scale in an attribute, like hand-written attention);
- hptransfer.nn.SelfAttention: its own ``logit_scale_factor``.

Hand-written attention (``softmax(q @ k.T * c)``) is none of these. :class:`AttentionProbe` runs one forward
and records every attention call with the module it ran in: SDPA and flex calls, and softmaxes whose input
derives from a product of two activations (q @ k^T). parametrize() refuses a model whose attention it cannot
reach when the scale would have to change, instead of leaving 1/sqrt(d) in place silently.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import HptError
from .shapes import index_pattern

SDPA = F.scaled_dot_product_attention
FLEX_SCALE_ARG = 5  # flex_attention's operator: (query, key, value, score_mod, block_mask, scale, kernel_options)


class AttentionError(HptError, ValueError):
    """Attention that a mu-P scheme must rescale but hptransfer cannot reach (or cannot size)."""


def _is_flex(func: Any) -> bool:
    return type(func).__name__ == "FlexAttentionHOP"


def head_dim_of(module: nn.Module) -> int | None:
    """Per-head width of an attention module, from the attributes attention code names it by."""
    for attr in ("head_dim", "attention_head_size", "d_head"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    n_head = next((getattr(module, a) for a in ("n_head", "num_heads", "n_heads")
                   if isinstance(getattr(module, a, None), int)), None)
    width = next((getattr(module, a) for a in ("d_model", "embed_dim", "hidden_size")
                  if isinstance(getattr(module, a, None), int)), None)
    return width // n_head if n_head and width else None


def mup_factor(attn: float, base_head_dim: int | None, head_dim: int) -> float:
    """The factor on a ``1/sqrt(head_dim)`` logit scale that gives mu-P's ``attn * sqrt(d0) / d``."""
    return attn if base_head_dim is None else attn * math.sqrt(base_head_dim / head_dim)


class AttentionScaleMode(TorchFunctionMode):
    """Rescales the ``scale`` of SDPA calls made outside attribute-scaled modules.

    flex_attention is not rescaled here: it runs its operator inside a compiled wrapper even in eager mode, where
    a mode's change of arguments does not reach it (measured: the output kept the old scale). Its calls are
    found by the probe and handled like hand-written attention (pass ``scale=self.<attribute>``).
    """

    def __init__(self, scope: "AttentionScope") -> None:
        super().__init__()
        self.scope = scope

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if self.scope.inside == 0:
            if func is SDPA:
                head_dim = args[0].shape[-1]
                scale = kwargs.get("scale")
                scale = head_dim**-0.5 if scale is None else scale
                kwargs = dict(kwargs, scale=scale * self.scope.factor(head_dim))
        return func(*args, **kwargs)


class AttentionScope:
    """Root hooks that enter AttentionScaleMode for the model's forward; ``inside`` counts the attribute-scaled
    modules being run (their calls already carry the new scale and must not be scaled twice)."""

    def __init__(self, attn: float, base_head_dim: int | None) -> None:
        self.attn = attn
        self.base_head_dim = base_head_dim
        self.inside = 0
        self.handles: list[Any] = []  # the hooks that run it (parametrize removes them when nothing needs them)
        self._active: list[AttentionScaleMode] = []

    def factor(self, head_dim: int) -> float:
        return mup_factor(self.attn, self.base_head_dim, head_dim)

    def enter(self, module: nn.Module, args: Any) -> None:
        mode = AttentionScaleMode(self)
        mode.__enter__()
        self._active.append(mode)

    def exit(self, module: nn.Module, args: Any, output: Any) -> None:
        self._active.pop().__exit__(None, None, None)

    def enter_covered(self, module: nn.Module, args: Any) -> None:
        self.inside += 1

    def exit_covered(self, module: nn.Module, args: Any, output: Any) -> None:
        self.inside -= 1


# ---- finding attention ---------------------------------------------------------------------------------
@dataclass
class AttentionCall:
    """One attention computation seen in a probe forward.

    Attributes:
        kind: "sdpa", "flex" or "softmax" (hand-written: a softmax over q @ k^T).
        module: the innermost module it ran in ("" for the root).
        head_dim: the contraction dim of q and k.
        scale: the logit scale applied (SDPA/flex argument; for softmax the scalar factors seen between the
            q @ k^T product and the softmax, which misses a scale folded into q or k beforehand).
    """

    kind: str
    module: str
    head_dim: int
    scale: float
    logits: torch.Tensor | None = None  # scale x q @ k^T before any mask, when the probe keeps them


_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm,
            torch.einsum, torch.baddbmm}
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_SCALE_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_}
_SCALE_DIV = {torch.div, torch.Tensor.div, torch.Tensor.__truediv__, torch.Tensor.div_}


def _activation(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter) and t.dim() >= 3


class AttentionProbe(TorchFunctionMode):
    """Records attention calls during one forward of ``root`` (see the module docstring)."""

    def __init__(self, root: nn.Module, keep_logits: bool = False) -> None:
        super().__init__()
        self.keep_logits = keep_logits
        self.names = {id(m): n for n, m in root.named_modules()}
        self.stack: list[str] = []
        self.calls: list[AttentionCall] = []
        self._qk: dict[int, tuple[torch.Tensor, int, float]] = {}  # id -> (tensor, head dim, scale so far)
        self._products: dict[int, torch.Tensor] = {}  # id of a derived tensor -> the q @ k^T it came from

    def run(self, forward: Callable[[], Any]) -> list[AttentionCall]:
        pre = nn.modules.module.register_module_forward_pre_hook(self._push)
        post = nn.modules.module.register_module_forward_hook(self._pop, always_call=True)
        # flex_attention compiles a wrapper even in eager mode; a probe must not trigger (re)compiles
        stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else nullcontext()
        try:
            with torch.no_grad(), stance, self:
                forward()
        finally:
            pre.remove()
            post.remove()
            self._qk.clear()
            self._products.clear()
        return self.calls

    def _push(self, module: nn.Module, args: Any) -> None:
        if id(module) in self.names:
            self.stack.append(self.names[id(module)])

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in self.names and self.stack:
            self.stack.pop()

    def _where(self) -> str:
        return self.stack[-1] if self.stack else ""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is SDPA:
            scale = kwargs.get("scale")
            head_dim = int(args[0].shape[-1])
            scale = head_dim**-0.5 if scale is None else float(scale)
            logits = _sdpa_logits(args[0], args[1], scale) if self.keep_logits else None
            self.calls.append(AttentionCall("sdpa", self._where(), head_dim, scale, logits))
        elif _is_flex(func) and len(args) > FLEX_SCALE_ARG:
            self.calls.append(AttentionCall("flex", self._where(), int(args[0].shape[-1]),
                                            float(args[FLEX_SCALE_ARG])))
        elif func in _MATMULS:
            self._track_product(func, args, kwargs, out)
        elif func in _SOFTMAX:
            source = self._qk.get(id(args[0])) if args else None
            if source is not None and source[0] is args[0]:
                logits = self._products.get(id(args[0])) if self.keep_logits else None
                self.calls.append(AttentionCall("softmax", self._where(), source[1], source[2],
                                                None if logits is None else logits * source[2]))
        elif isinstance(out, torch.Tensor):
            self._propagate(func, args, out)
        return out

    def _track_product(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if func is torch.einsum:
            operands = [a for a in args[1:] if isinstance(a, torch.Tensor)]
            equation = args[0] if args and isinstance(args[0], str) else ""
            contracted = _einsum_contraction(equation, operands)
            if len(operands) == 2 and all(_activation(t) for t in operands) and contracted:
                self._qk[id(out)] = (out, contracted, 1.0)
                self._products[id(out)] = out
            return
        operands = list(args[1:3]) if func is torch.baddbmm else list(args[:2])
        if len(operands) == 2 and all(_activation(t) for t in operands) and isinstance(out, torch.Tensor):
            scale = float(kwargs.get("alpha", 1.0)) if func is torch.baddbmm else 1.0
            self._qk[id(out)] = (out, int(operands[0].shape[-1]), scale)
            self._products[id(out)] = out / scale if scale != 1.0 else out

    def _propagate(self, func: Any, args: tuple, out: torch.Tensor) -> None:
        for arg in args:
            source = self._qk.get(id(arg)) if isinstance(arg, torch.Tensor) else None
            if source is None or source[0] is not arg:
                continue
            scale = source[2]
            numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if numbers and func in _SCALE_MUL:
                scale *= float(numbers[0])
            elif numbers and func in _SCALE_DIV:
                scale /= float(numbers[0])
            self._qk[id(out)] = (out, source[1], scale)
            if id(arg) in self._products:
                self._products[id(out)] = self._products[id(arg)]
            return


def _sdpa_logits(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * q @ k^T`` as SDPA forms it, with grouped-query keys repeated to the query heads."""
    if key.dim() == query.dim() and key.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    return (query @ key.transpose(-2, -1)) * scale


def _einsum_contraction(equation: str, operands: list[torch.Tensor]) -> int:
    """Size of the summed index of a two-operand einsum (0 when it cannot tell)."""
    if "->" not in equation or len(operands) != 2:
        return 0
    inputs, output = equation.replace(" ", "").split("->")
    parts = inputs.split(",")
    if len(parts) != 2 or "." in inputs:
        return 0
    summed = [c for c in parts[0] if c in parts[1] and c not in output]
    if len(summed) != 1:
        return 0
    return int(operands[0].shape[parts[0].index(summed[0])])


def probe_attention(root: nn.Module, run: Callable[[], Any]) -> list[AttentionCall]:
    """Every attention computation one call of ``run`` makes inside ``root``."""
    return AttentionProbe(root).run(run)


def inside(module: str, covered: set[str]) -> bool:
    """Whether a module is one of ``covered`` or nested in one."""
    return any(module == c or module.startswith(c + ".") or c == "" for c in covered)


def base_head_dims(calls: list[AttentionCall]) -> dict[str, int]:
    """Head dim per module index pattern (blocks.3.attn and blocks.0.attn pool)."""
    return {index_pattern(c.module): c.head_dim for c in calls}
