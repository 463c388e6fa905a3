"""Measuring a parametrized model against mu-P, independently of hptransfer's own probe.

- The logit scale each attention call applies at the softmax input: for a softmax over a product of two
  activations, the softmax input divided by that product, entry by entry (numbers, not bookkeeping), times any
  scalar q or k were multiplied by on their way to the product; for SDPA its ``scale`` argument (or default)
  times the same scalars. mu-P: the base's scale x d0 / d.
- Every module's output rms against a real base of the same depth: mu-P keeps hidden activations equal and
  shrinks a readout's logits like m^-1/2 at init.
- Every parameter's std against that base: hidden (two width dims) x m^-1/2, everything else x1.
- Every parameter's Adam LR factor from hpt.param_groups: hidden 1/m, everything else 1 (times the depth rule).
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.einsum}
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
_DIV = {torch.div, torch.Tensor.div, torch.Tensor.__truediv__}
_KEEP = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.transpose, torch.Tensor.permute,
         torch.Tensor.contiguous, torch.Tensor.to, torch.Tensor.float, torch.Tensor.__getitem__, torch.Tensor.unbind,
         torch.Tensor.chunk, torch.Tensor.split, torch.unbind, torch.Tensor.unsqueeze, torch.Tensor.expand,
         torch.Tensor.repeat_interleave}


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
        return float(value)
    return None


class LogitScales(TorchFunctionMode):
    """The applied logit scale of every attention call in one forward (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.factors: dict[int, tuple[torch.Tensor, float]] = {}
        self.products: list[tuple[torch.Tensor, float, int]] = []
        self.scales: list[tuple[str, int, float]] = []  # (kind, head dim, scale)

    def _factor(self, t: Any) -> float:
        entry = self.factors.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is t else 1.0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            scale = kwargs.get("scale")
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            self.scales.append(("sdpa", int(q.shape[-1]), float(scale) * self._factor(q) * self._factor(k)))
        elif func in _MATMUL:
            operands = [a for a in (args[1:] if func is torch.einsum else args[:2]) if isinstance(a, torch.Tensor)]
            if len(operands) == 2 and all(o.dim() >= 3 and not isinstance(o, nn.Parameter) for o in operands):
                pre = self._factor(operands[0]) * self._factor(operands[1])
                head_dim = _contracted(func, args, operands)
                self.products.append((out.detach(), pre, head_dim))
        elif func in _SOFTMAX:
            logits = args[0].detach().float()
            match = next(((p, pre, d) for p, pre, d in reversed(self.products) if p.shape == logits.shape), None)
            if match is not None:
                product = match[0].float()
                keep = torch.isfinite(logits) & (product.abs() > 1e-6) & (logits.abs() < 1e4)
                if keep.any():
                    ratio = float((logits[keep] / product[keep]).median())
                    self.scales.append(("softmax", match[2], ratio * match[1]))
        elif isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor) and args[0].dim() >= 3:
            numbers = [n for n in map(_number, args[1:]) if n is not None]
            if func in _MUL and numbers:
                self.factors[id(out)] = (out, self._factor(args[0]) * numbers[0])
            elif func in _DIV and numbers:
                self.factors[id(out)] = (out, self._factor(args[0]) / numbers[0])
            elif func in _KEEP and self._factor(args[0]) != 1.0:
                self.factors[id(out)] = (out, self._factor(args[0]))
        elif isinstance(out, (tuple, list)) and func in _KEEP and args and self._factor(args[0]) != 1.0:
            for t in out:
                self.factors[id(t)] = (t, self._factor(args[0]))
        return out


def _contracted(func: Any, args: tuple, operands: list[torch.Tensor]) -> int:
    if func is torch.einsum:
        inputs, output = args[0].replace(" ", "").split("->")
        left, right = inputs.split(",")
        summed = [c for c in left if c in right and c not in output]
        return int(operands[0].shape[left.index(summed[0])]) if summed else 0
    return int(operands[0].shape[-1])


def run(model: nn.Module, inputs: Any) -> Any:
    with torch.no_grad():
        return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def logit_scales(model: nn.Module, inputs: Any) -> list[tuple[str, int, float]]:
    mode = LogitScales()
    with mode:
        run(model, inputs)
    return mode.scales


class NoQK(TorchFunctionMode):
    """Attention with the q.k term of its logits set to zero (masks and biases kept): mu-P shrinks that term's
    init part with width, so activations are compared without it (the scales are compared on their own)."""

    def __init__(self) -> None:
        super().__init__()
        self.products: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q = args[0]
            return func(torch.zeros_like(q), *args[1:], **kwargs)
        if func in _SOFTMAX:
            entry = self.products.get(id(args[0]))
            if entry is not None and entry[0] is args[0]:
                # the logits minus what they owe to q.k: measured as the change when the product is zeroed
                return func(entry[1], *args[1:], **kwargs)
        out = func(*args, **kwargs)
        if func in _MATMUL and isinstance(out, torch.Tensor):
            operands = [a for a in (args[1:] if func is torch.einsum else args[:2]) if isinstance(a, torch.Tensor)]
            if len(operands) == 2 and all(o.dim() >= 3 and not isinstance(o, nn.Parameter) for o in operands):
                self.products[id(out)] = (out, torch.zeros_like(out))
        elif isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            entry = self.products.get(id(args[0]))
            if entry is not None and entry[0] is args[0] and out.shape == args[0].shape:
                # replay the op on the zeroed logits: masks and biases added after the product stay
                rest = tuple(entry[1] if a is args[0] else a for a in args)
                self.products[id(out)] = (out, func(*rest, **kwargs))
        return out


def module_rms(model: nn.Module, inputs: Any) -> dict[str, float]:
    """rms of every module's first floating output, in train mode with dropout off, BatchNorm stats restored,
    attention without its q.k term (NoQK)."""
    values: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(mod, args, output, name=name):  # type: ignore[no-untyped-def]
            t = output if isinstance(output, torch.Tensor) else next(
                (o for o in (output if isinstance(output, (tuple, list)) else ()) if isinstance(o, torch.Tensor)), None)
            if t is not None and t.is_floating_point() and name not in values:
                values[name] = float(t.detach().float().pow(2).mean().sqrt())
        handles.append(module.register_forward_hook(hook))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    try:
        with torch.random.fork_rng(devices=[]), NoQK():
            torch.manual_seed(0)
            run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.load_state_dict(state)
    return values


def width_dims(shape: tuple[int, ...], base_shape: tuple[int, ...]) -> int:
    return sum(1 for a, b in zip(shape, base_shape) if a != b)


def is_readout(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, g) for g in globs)


def _owns_parameters(model: nn.Module, least: int = 256) -> set[str]:
    """Modules holding at least ``least`` parameter entries (the output of a smaller one, a bias table of 32 x 4,
    is a handful of random numbers: its rms is one draw's noise)."""
    return {n for n, m in model.named_modules() if n and sum(p.numel() for p in m.parameters()) >= least}


def _mean(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(d) for d in dicts))
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in keys}


def _track(stats: dict[str, float] | None, kind: str, ratio: float, expected: float) -> None:
    """The worst relative error per kind of quantity (for the zoo table)."""
    if stats is not None:
        stats[kind] = max(stats.get(kind, 0.0), abs(ratio / expected - 1))


def compare(models: list[nn.Module], bases: list[nn.Module], inputs: Any, readouts: tuple[str, ...], m: float,
            branches: dict[str, float] | None = None, tolerance: float = 0.10,
            stats: dict[str, float] | None = None) -> list[str]:
    """Every quantity of the parametrized ``models`` against plain ``bases`` of the same depth, each averaged over
    the random draws given (one model and one base per seed: a single draw of a 32-wide product of random
    matrices is off by 10-20%): the problems found.

    Args:
        branches: expected output ratio of residual-branch modules under a depth scheme (m_L^-alpha); the
            activations past the first branch are not compared then (depth rules change the stream).
    """
    problems = []
    base_stds = _mean([{n: float(p.detach().float().std()) for n, p in b.named_parameters() if p.numel() > 1}
                       for b in bases])
    model_stds = _mean([{n: float(p.detach().float().std()) for n, p in x.named_parameters() if p.numel() > 1}
                        for x in models])
    shapes = {n: tuple(p.shape) for n, p in bases[0].named_parameters()}
    for name, param in models[0].named_parameters():
        if name not in base_stds or name not in model_stds or param.numel() < 64 or base_stds[name] == 0:
            continue
        expected = m ** -0.5 if width_dims(tuple(param.shape), shapes[name]) >= 2 else 1.0
        ratio = model_stds[name] / base_stds[name]
        # tables of fewer than 4096 entries are reported apart: their stds carry 1/sqrt(2n)-size sampling noise
        _track(stats, "std" if param.numel() >= 4096 else "std, small tensors", ratio, expected)
        if abs(ratio / expected - 1) > tolerance + 2 / math.sqrt(param.numel() * len(models)):
            problems.append(f"std of {name}: x{ratio:.3g} the base's, mu-P x{expected:.3g}")
    owners = _owns_parameters(models[0])
    got = _mean([module_rms(x, inputs) for x in models])
    want = _mean([module_rms(b, inputs) for b in bases])
    readout_names = [n for n, _ in models[0].named_modules() if n and is_readout(n, readouts)]
    order = [n for n in module_order(models[0], inputs) if n in owners]
    stop = next((order.index(b) for b in order if b in (branches or {})), None)
    for index, name in enumerate(order):
        if name not in want or want[name] < 1e-8 or name not in got:
            continue
        if any(r.startswith(name + ".") for r in readout_names):
            continue  # contains a readout: its output is logits
        ratio = got[name] / want[name]
        if branches and name in branches:
            if abs(ratio / branches[name] - 1) > tolerance and ("bn" in name or "norm" in name):
                problems.append(f"rms of branch {name}: x{ratio:.3g} the base's, the depth rule x{branches[name]:.3g}")
            continue
        if stop is not None and index > stop:
            continue
        if is_readout(name, readouts):
            # logits: the random part shrinks like m^-1/2 (1/m times a sum over m times more terms); a tied head
            # also sees its own embedding in the stream, a part that does not shrink. A missing 1/m gives
            # m^+1/2, an extra one m^-3/2: both outside [m^-1/2, 1].
            if not (m ** -0.5 * (1 - 2 * tolerance) <= ratio <= 1 + tolerance):
                problems.append(f"rms of readout {name}: x{ratio:.3g} the base's, mu-P x{m ** -0.5:.3g}..x1")
        else:
            _track(stats, "activation", ratio, 1.0)
            if abs(ratio - 1) > tolerance:
                problems.append(f"rms of {name}: x{ratio:.3g} the base's, mu-P x1")
    return problems


def module_order(model: nn.Module, inputs: Any) -> list[str]:
    """Module names in the order their forward finished."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: order.append(n)) for n, m in model.named_modules()]
    try:
        run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def scale_problems(model: nn.Module, base: nn.Module, inputs: Any, tolerance: float = 0.10,
                   stats: dict[str, float] | None = None) -> list[str]:
    got, want = logit_scales(model, inputs), logit_scales(base, inputs)
    if len(got) != len(want):
        return [f"attention calls: {len(got)} in the model, {len(want)} in the base"]
    problems = []
    for index, ((kind, d, scale), (_, d0, s0)) in enumerate(zip(got, want)):
        expected = s0 * d0 / d
        _track(stats, "attention scale", scale, expected)
        if stats is not None:
            stats["attention calls"] = stats.get("attention calls", 0) + 1
        if abs(scale / expected - 1) > tolerance:
            problems.append(f"attention call {index} ({kind}, head dim {d}): scale {scale:.4g}, mu-P {expected:.4g}")
    return problems
