"""Attention calls seen in a probe forward: where each runs, its head dim and the logit scale it applies.

An attention call is an ``F.scaled_dot_product_attention`` call, a ``flex_attention`` call, or a softmax whose
input derives from a product of two activations (hand-written ``softmax(q @ k^T * c)``, matmul or einsum).
Its *scale* is measured relative to q and k as they leave the ops that made them: the SDPA/flex ``scale``
argument (or its default 1/sqrt(d)), times every scalar the code multiplied q or k by on their way there
(``q = q * self.scale``), times every scalar between the product and the softmax. Scalars are Python numbers
or 0-d tensors holding values (a 0-d tensor on the meta device has none: such a call is marked ``exact=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..names import index_pattern
from .forward import run_probe

SDPA = F.scaled_dot_product_attention
FLEX_SCALE_ARG = 5  # flex_attention's operator: (query, key, value, score_mod, block_mask, scale, kernel_options)

_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm,
            torch.einsum, torch.baddbmm}
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_SCALE_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_}
_SCALE_DIV = {torch.div, torch.Tensor.div, torch.Tensor.__truediv__, torch.Tensor.div_}
# ops that move a tensor's entries without changing them: a scalar applied before them still applies after
_SHAPE_OPS = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.transpose, torch.transpose,
              torch.Tensor.permute, torch.permute, torch.Tensor.contiguous, torch.Tensor.clone, torch.Tensor.to,
              torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.type_as,
              torch.Tensor.unsqueeze, torch.Tensor.squeeze, torch.Tensor.flatten, torch.Tensor.unflatten,
              torch.Tensor.expand, torch.Tensor.repeat_interleave, torch.repeat_interleave,
              torch.Tensor.__getitem__, torch.Tensor.chunk, torch.chunk, torch.Tensor.split, torch.split,
              torch.Tensor.unbind, torch.unbind}


@dataclass
class AttentionCall:
    """One attention computation seen in a probe forward.

    Attributes:
        kind: "sdpa", "flex" or "softmax" (hand-written: a softmax over q @ k^T).
        module: the innermost module it ran in ("" for the root).
        head_dim: the contraction dim of q and k.
        scale: the logit scale applied relative to q and k as their producing ops left them (see module doc).
        exact: False when a factor could not be read (a 0-d tensor without values, on the meta device).
        logits: ``scale * q @ k^T`` before any mask, when the recorder keeps them.
    """

    kind: str
    module: str
    head_dim: int
    scale: float
    exact: bool = True
    logits: torch.Tensor | None = None

    @property
    def pattern(self) -> str:
        """The module's name with block indices replaced (blocks.3.attn and blocks.0.attn share one)."""
        return index_pattern(self.module)


def _activation(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter) and t.dim() >= 3


def _scalar(value: Any) -> float | None:
    """A Python number or a 0-d tensor's value (None for anything else, and for a 0-d tensor without values)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_meta and value.is_floating_point():
        return float(value)
    return None


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


class AttentionRecorder:
    """Records every attention call of a probe forward (a Recorder for probe.forward.run_probe)."""

    def __init__(self, keep_logits: bool = False) -> None:
        self.keep_logits = keep_logits
        self.calls: list[AttentionCall] = []
        # id -> (tensor, factor): activations multiplied by a scalar since they were made (q = q * scale)
        self._factors: dict[int, tuple[torch.Tensor, float]] = {}
        # id -> (tensor, head dim, scale so far, raw product): what derives from a product of two activations
        self._products: dict[int, tuple[torch.Tensor, int, float, torch.Tensor]] = {}
        self._inexact: set[int] = set()

    def finish(self) -> None:
        self._factors.clear()
        self._products.clear()
        self._inexact.clear()

    def factor(self, t: Any) -> float:
        entry = self._factors.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is t else 1.0

    def observe(self, func: Any, args: tuple, kwargs: dict, out: Any, where: str) -> None:
        if func is SDPA:
            query, key = args[0], args[1]
            head_dim = int(query.shape[-1])
            scale = kwargs.get("scale")
            scale = head_dim**-0.5 if scale is None else float(scale)
            logits = _sdpa_logits(query, key, scale) if self.keep_logits else None
            exact = id(query) not in self._inexact and id(key) not in self._inexact
            self.calls.append(AttentionCall("sdpa", where, head_dim, scale * self.factor(query) * self.factor(key),
                                            exact, logits))
        elif type(func).__name__ == "FlexAttentionHOP" and len(args) > FLEX_SCALE_ARG:
            query, key = args[0], args[1]
            self.calls.append(AttentionCall("flex", where, int(query.shape[-1]),
                                            float(args[FLEX_SCALE_ARG]) * self.factor(query) * self.factor(key)))
        elif func in _MATMULS:
            self._track_product(func, args, kwargs, out)
        elif func in _SOFTMAX:
            source = self._products.get(id(args[0])) if args else None
            if source is not None and source[0] is args[0]:
                logits = source[3] * source[2] if self.keep_logits else None
                self.calls.append(AttentionCall("softmax", where, source[1], source[2],
                                                id(args[0]) not in self._inexact, logits))
        else:
            self._propagate(func, args, out)

    def _track_product(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if func is torch.einsum:
            operands = [a for a in (args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:])
                        if isinstance(a, torch.Tensor)]
            equation = args[0] if args and isinstance(args[0], str) else ""
            head_dim = _einsum_contraction(equation, operands)
            alpha = 1.0
        else:
            operands = list(args[1:3]) if func is torch.baddbmm else list(args[:2])
            head_dim = int(operands[0].shape[-1]) if operands and isinstance(operands[0], torch.Tensor) else 0
            alpha = float(kwargs.get("alpha", 1.0)) if func is torch.baddbmm else 1.0
        if len(operands) == 2 and all(_activation(t) for t in operands) and head_dim:
            pre = self.factor(operands[0]) * self.factor(operands[1])
            raw = out / alpha if alpha != 1.0 else out
            self._products[id(out)] = (out, head_dim, alpha * pre, raw / pre if pre != 1.0 else raw)
            if any(id(t) in self._inexact for t in operands):
                self._inexact.add(id(out))

    def _propagate(self, func: Any, args: tuple, out: Any) -> None:
        outs = _outputs(out)
        if not outs or not args:
            return
        numbers = [_scalar(a) for a in args[1:]] if func in (_SCALE_MUL | _SCALE_DIV) else []
        number = next((n for n in numbers if n is not None), None)
        blind = func in (_SCALE_MUL | _SCALE_DIV) and any(
            isinstance(a, torch.Tensor) and a.dim() == 0 and a.is_meta for a in args)
        for arg in args[:1] if func in _SHAPE_OPS else args:
            if not isinstance(arg, torch.Tensor):
                continue
            product = self._products.get(id(arg))
            if product is not None and product[0] is arg:
                if any(t.shape != arg.shape for t in outs):
                    return  # logits become logits only through ops that keep their shape (masks, scales, caps)
                scale = product[2]
                if number is not None:
                    scale = scale * number if func in _SCALE_MUL else scale / number
                for t in outs:
                    self._products[id(t)] = (t, product[1], scale, product[3])
                    if blind or id(arg) in self._inexact:
                        self._inexact.add(id(t))
                return
            if not _activation(arg):
                continue
            if func in _SHAPE_OPS or (number is not None and func in (_SCALE_MUL | _SCALE_DIV)) or blind:
                factor = self.factor(arg)
                if number is not None:
                    factor = factor * number if func in _SCALE_MUL else factor / number
                for t in outs:
                    if factor != 1.0:
                        self._factors[id(t)] = (t, factor)
                    if blind or id(arg) in self._inexact:
                        self._inexact.add(id(t))
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


def inside(module: str, covered: set[str]) -> bool:
    """Whether a module is one of ``covered`` or nested in one."""
    return any(module == c or module.startswith(c + ".") or c == "" for c in covered)


def probe_attention(root: nn.Module, run: Any, keep_logits: bool = False) -> list[AttentionCall]:
    """Every attention call one call of ``run`` makes inside ``root``."""
    recorder = AttentionRecorder(keep_logits)
    run_probe(root, run, [recorder])
    return recorder.calls
