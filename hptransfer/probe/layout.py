"""How each parameter is used in a probe forward: which of its dims a product contracts (its fan-in).

A weight's layout is a convention of the code that uses it: ``nn.Linear`` stores (out, in), ``nn.Embedding``
and transformers' ``Conv1D`` (in, out), a research model may keep ``W`` as (d_in, d_out) and write ``x @ W``,
fused MoE experts stack (E, out, in) matrices and index one per expert. The recorder follows each parameter
through the ops that only move its entries (transpose, view, indexing an expert, casts) to the op that uses it,
and records per use: the module it ran in, the kind of use, and which of the parameter's own dims are fan-in,
fan-out and stacked (a dim indexed away or shared with the input as a batch dim).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Kinds of use: "matmul" (a product: linear, matmul, conv, einsum), "lookup" (embedding rows),
# "elementwise" (norm gains, biases, added position embeddings, concatenated class tokens).
_LINEAR = {F.linear, torch._C._nn.linear}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.mm,
           torch.Tensor.mm, torch.bmm, torch.Tensor.bmm}
_ADDMM = {torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm}
_CONV = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d}
_CONV_T = {F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, torch.conv_transpose1d,
           torch.conv_transpose2d, torch.conv_transpose3d}
_LOOKUP = {F.embedding, torch.embedding, F.embedding_bag, torch.embedding_bag}
_SAME_AXES = {torch.Tensor.to, torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.double,
              torch.Tensor.type, torch.Tensor.type_as, torch.Tensor.contiguous, torch.Tensor.clone,
              torch.Tensor.detach, torch.Tensor.narrow, torch.narrow, torch.Tensor.chunk, torch.chunk,
              torch.Tensor.split, torch.split, torch.Tensor.tensor_split, torch.tensor_split}
_SCALE = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.div, torch.Tensor.div,
          torch.Tensor.__truediv__}
Axes = tuple  # for each dim of a derived tensor, the parameter's dim it holds (None: a mix of dims)


@dataclass(frozen=True)
class Use:
    """One use of a parameter in a probe forward.

    Attributes:
        module: the innermost module the use ran in ("" for the root).
        kind: "matmul", "lookup" or "elementwise".
        fan_in, fan_out: the parameter's dims that a product contracts / produces (None where there is none).
        stacked: the parameter's dims that index separate matrices (experts) or act as batch dims.
    """

    module: str
    kind: str
    fan_in: int | None = None
    fan_out: int | None = None
    stacked: tuple[int, ...] = ()


def _tensor_args(args: tuple, kwargs: dict) -> list[Any]:
    flat = list(args) + list(kwargs.values())
    out = []
    for a in flat:
        if isinstance(a, (list, tuple)):
            out += [t for t in a if isinstance(t, torch.Tensor)]
        elif isinstance(a, torch.Tensor):
            out.append(a)
    return out


class LayoutRecorder:
    """Records every use of every parameter of ``root`` in a probe forward (a probe.forward Recorder)."""

    def __init__(self, root: nn.Module) -> None:
        self.params = {id(p): n for n, p in root.named_parameters()}
        self.uses: dict[str, list[Use]] = defaultdict(list)
        self._derived: dict[int, tuple[torch.Tensor, str, Axes]] = {}

    def finish(self) -> None:
        self._derived.clear()

    def _source(self, t: Any) -> tuple[str, Axes] | None:
        if not isinstance(t, torch.Tensor):
            return None
        name = self.params.get(id(t))
        if name is not None and isinstance(t, nn.Parameter):
            return name, tuple(range(t.dim()))
        entry = self._derived.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1], entry[2]
        return None

    def _record(self, name: str, use: Use) -> None:
        if use not in self.uses[name]:
            self.uses[name].append(use)

    def observe(self, func: Any, args: tuple, kwargs: dict, out: Any, where: str) -> None:
        if not (isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and out
                                                  and all(isinstance(t, torch.Tensor) for t in out))):
            return  # a query (size, dtype, comparison of dtypes): no use of the values
        tensors = _tensor_args(args, kwargs)
        sources = [(t, s) for t in tensors if (s := self._source(t)) is not None]
        if not sources:
            return
        if _is_grouped_mm(func):  # (tokens, in) x stacked (E, in, out), one matrix per group of tokens
            weight = args[1] if len(args) > 1 else next(iter(kwargs.values()), None)
            self._product(weight, -2, -1, where)
        elif func in _LINEAR:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            self._product(weight, -1, -2, where)
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            self._elementwise([bias], where)
        elif func in _MATMUL:
            left, right = args[0], args[1]
            if func is torch.Tensor.__rmatmul__:
                left, right = right, left
            if self._source(right) is not None:
                self._product(right, -2, -1, where) if right.dim() >= 2 else self._product(right, 0, None, where)
            if self._source(left) is not None and left.dim() >= 2:
                self._product(left, -1, -2, where)
        elif func in _ADDMM:
            self._product(args[2], -2, -1, where)
            if self._source(args[1]) is not None:
                self._product(args[1], -1, -2, where)
            self._elementwise([args[0]], where)
        elif func in _CONV:
            self._product(args[1] if len(args) > 1 else kwargs.get("weight"), 1, 0, where)
            self._elementwise([args[2] if len(args) > 2 else kwargs.get("bias")], where)
        elif func in _CONV_T:
            self._product(args[1] if len(args) > 1 else kwargs.get("weight"), 0, 1, where)
            self._elementwise([args[2] if len(args) > 2 else kwargs.get("bias")], where)
        elif func in _LOOKUP:
            weight = args[0] if func in (torch.embedding, torch.embedding_bag) else (
                args[1] if len(args) > 1 else kwargs.get("weight"))
            self._product(weight, 0, 1, where, kind="lookup")
        elif func is torch.einsum:
            self._einsum(args, where)
        elif self._moves(func, args, kwargs, out, sources):
            return
        else:
            self._elementwise([t for t, _ in sources], where)

    # ---- uses ------------------------------------------------------------------------------------------
    def _product(self, weight: Any, fan_in: int | None, fan_out: int | None, where: str,
                 kind: str = "matmul") -> None:
        source = self._source(weight)
        if source is None:
            return
        name, axes = source
        dims = weight.dim()
        pick = (lambda d: None if d is None else axes[d % dims])
        used = {d % dims for d in (fan_in, fan_out) if d is not None}
        stacked = tuple(a for i, a in enumerate(axes) if i not in used and a is not None and weight.shape[i] > 1
                        and kind == "matmul" and dims > 2 and i < dims - 2)
        self._record(name, Use(where, kind, pick(fan_in), pick(fan_out), stacked))

    def _elementwise(self, tensors: list[Any], where: str) -> None:
        for t in tensors:
            source = self._source(t)
            if source is not None:
                self._record(source[0], Use(where, "elementwise"))

    def _einsum(self, args: tuple, where: str) -> None:
        equation = args[0] if args and isinstance(args[0], str) else ""
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        if "->" not in equation or "." in equation:
            self._elementwise(operands, where)
            return
        inputs, output = equation.replace(" ", "").split("->")
        letters = inputs.split(",")
        for index, operand in enumerate(operands):
            source = self._source(operand)
            if source is None or index >= len(letters):
                continue
            mine = letters[index]
            others = "".join(l for i, l in enumerate(letters) if i != index)
            contracted = [i for i, c in enumerate(mine) if c not in output]
            produced = [i for i, c in enumerate(mine) if c in output and c not in others]
            shared = [i for i, c in enumerate(mine) if c in output and c in others and operand.shape[i] > 1]
            name, axes = source
            if len(contracted) == 1:
                # several produced letters ("edh" in "btd,edh->bteh"): the last is the matrix's fan-out and the
                # others index a stack of matrices (experts), the convention of stacked weights
                stack = shared + produced[:-1]
                self._record(name, Use(where, "matmul", axes[contracted[0]],
                                       axes[produced[-1]] if produced else None,
                                       tuple(axes[i] for i in sorted(stack) if axes[i] is not None)))
            else:
                self._record(name, Use(where, "elementwise"))

    # ---- ops that only move entries --------------------------------------------------------------------
    def _moves(self, func: Any, args: tuple, kwargs: dict, out: Any, sources: list) -> bool:
        """Track ``out`` when ``func`` only rearranges the entries of a parameter; True when handled."""
        tensor, (name, axes) = sources[0]
        if args and args[0] is not tensor:
            if func in _SCALE and isinstance(out, torch.Tensor) and out.shape == tensor.shape:
                self._derive(out, name, axes)  # e.g. 2.0 * W
                return True
            return False
        new = _moved_axes(func, args, kwargs, tensor, out, axes)
        if new is None:
            return False
        outs = out if isinstance(out, (tuple, list)) else [out]
        for t in outs:
            if isinstance(t, torch.Tensor):
                self._derive(t, name, new if len(new) == t.dim() else tuple([None] * t.dim()))
        return True

    def _derive(self, t: torch.Tensor, name: str, axes: Axes) -> None:
        self._derived[id(t)] = (t, name, axes)


def _is_grouped_mm(func: Any) -> bool:
    return "grouped_mm" in getattr(func, "__name__", "") or "grouped_mm" in str(func)


_TRANSPOSE_GETTERS = {torch.Tensor.T.__get__, torch.Tensor.mT.__get__, torch.Tensor.H.__get__,
                      torch.Tensor.mH.__get__}


def _moved_axes(func: Any, args: tuple, kwargs: dict, tensor: torch.Tensor, out: Any, axes: Axes) -> Axes | None:
    """The axes of ``out`` when ``func(tensor, ...)`` only moves entries; None when it does something else."""
    dims = tensor.dim()
    if func in _SAME_AXES or func is torch.Tensor.data.__get__:
        return axes
    if func in _TRANSPOSE_GETTERS:
        return tuple(reversed(axes)) if dims == 2 and func in (torch.Tensor.T.__get__, torch.Tensor.H.__get__) \
            else axes[:-2] + (axes[-1], axes[-2])
    if func in _SCALE and isinstance(out, torch.Tensor) and out.shape == tensor.shape:
        return axes  # W * c, W * gain (equalized learning rate, weight norm)
    if func in (torch.t, torch.Tensor.t):
        return tuple(reversed(axes)) if dims == 2 else axes[:-2] + (axes[-1], axes[-2])
    if func in (torch.Tensor.transpose, torch.transpose, torch.Tensor.swapaxes, torch.swapaxes):
        a, b = (int(args[1]) % dims, int(args[2]) % dims) if len(args) > 2 else (0, 1)
        moved = list(axes)
        moved[a], moved[b] = moved[b], moved[a]
        return tuple(moved)
    if func in (torch.Tensor.permute, torch.permute):
        order = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        return tuple(axes[int(i) % dims] for i in order)
    if func is torch.Tensor.__getitem__:
        return _indexed_axes(args[1], axes)
    if func in (torch.Tensor.select, torch.select):
        drop = int(args[1]) % dims
        return tuple(a for i, a in enumerate(axes) if i != drop)
    if func in (torch.Tensor.unbind, torch.unbind):
        drop = int(args[1] if len(args) > 1 else kwargs.get("dim", 0)) % dims
        return tuple(a for i, a in enumerate(axes) if i != drop)
    if func in (torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.unsqueeze,
                torch.Tensor.squeeze, torch.Tensor.expand, torch.Tensor.expand_as, torch.Tensor.flatten,
                torch.Tensor.unflatten) and isinstance(out, torch.Tensor):
        return _reshaped_axes(tuple(tensor.shape), tuple(out.shape), axes)
    return None


def _indexed_axes(index: Any, axes: Axes) -> Axes | None:
    items = index if isinstance(index, tuple) else (index,)
    result: list[Any] = []
    position = 0
    for item in items:
        if item is Ellipsis:
            rest = len(axes) - position - sum(1 for i in items if i is not Ellipsis and i is not None)
            result += axes[position:position + rest]
            position += rest
        elif item is None:
            result.append(None)
        elif isinstance(item, slice):
            result.append(axes[position])
            position += 1
        elif isinstance(item, int) or (isinstance(item, torch.Tensor) and item.dim() == 0):
            position += 1  # one matrix of a stack: the dim is indexed away
        elif isinstance(item, torch.Tensor) and not item.is_floating_point() and len(items) == 1:
            return (None,) * item.dim() + tuple(axes[1:])  # matrices gathered from a stack (one per token)
        else:
            return None  # other fancy indexing: entries are gathered in a way we do not follow
    return tuple(result) + tuple(axes[position:])


def _reshaped_axes(before: tuple, after: tuple, axes: Axes) -> Axes:
    """Axes through a reshape that inserts or removes size-1 dims or broadcasts (right-aligned); other dims
    that a reshape merges or splits lose their identity (None)."""
    kept = [(s, a) for s, a in zip(before, axes) if s != 1]
    result: list[Any] = []
    for size in reversed(after):
        if size == 1:
            result.append(None)
        elif kept and kept[-1][0] == size:
            result.append(kept.pop()[1])
        else:
            result.append(None)
            kept = []
    return tuple(reversed(result))
