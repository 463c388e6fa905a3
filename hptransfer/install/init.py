"""Initial weights under a scheme: the base's std times the rule's factor, with the base std found, never guessed.

For each parameter the target std is ``base_std * rule.init_std`` (docs/rules.md, "Width"). The base std comes,
in this order, from: the model itself when its module is at base shape; a real (non-meta) base, measured; the
family's own init (an adapter: ``transformers``' initializer_range); PyTorch's default init, recognised by its
distribution (uniform on +-1/sqrt(fan_in): exact bounds, not a std with a tolerance); or the model's custom init
when its law is unambiguous. For a custom init, each candidate law (constant; std ~ fan_in^-1/2; fan_out^-1/2;
(fan_in + fan_out)^-1/2) is ruled out by two weights that have equal stds where the law would make them differ
by >= 1.3x. Constant is chosen when every other law is ruled out; a single law is chosen when it alone fits all
weights with one constant; anything else is ambiguous and parametrize() refuses with :class:`InitError`.
Every record says where its base std came from (``ParamRecord.init_source``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import nn as hnn
from ..errors import InitError
from ..plan import ParamRecord, Plan
from .fresh import is_pytorch_default, not_fresh

EQUAL = 0.10  # stds within 10% count as equal
DISTINCT = 1.3  # a law must predict at least this ratio for an equal pair to rule it out

LAWS: dict[str, Callable[[float, float], float]] = {
    "fan_in": lambda fan_in, fan_out: fan_in**-0.5,
    "fan_out": lambda fan_in, fan_out: fan_out**-0.5,
    "fan_avg": lambda fan_in, fan_out: (fan_in + fan_out) ** -0.5,
}


@dataclass
class Weight:
    """One weight's measured std with its fan-in / fan-out in the model and in the base."""

    name: str
    std: float
    fans: tuple[float, float]
    base_fans: tuple[float, float]
    numel: int = 10**9  # entries: a std measured on n of them is off by about 1/sqrt(2n)


def fans(rec: ParamRecord, shape: tuple[int, ...]) -> tuple[float, float]:
    """(fan_in, fan_out) of a >= 2-d weight with the plan's fan dims (receptive field included; the dims of a
    stack of matrices, such as fused experts, are not fans)."""
    in_axis, out_axis = rec.fan_dims if rec.fan_dims is not None else (1, 0)
    in_axis = 1 if in_axis is None else in_axis
    out_axis = 0 if out_axis is None else out_axis
    field = math.prod(s for i, s in enumerate(shape) if i not in (out_axis, in_axis) and i not in rec.stacked_dims)
    return float(shape[in_axis] * field), float(shape[out_axis] * field)


def infer_law(weights: list[Weight]) -> str | None:
    """The custom init law shared by ``weights``: "constant", a key of LAWS, or None when ambiguous."""
    ruled_out = set()
    for a, b in itertools.combinations(weights, 2):
        if abs(a.std / b.std - 1) > EQUAL:
            continue
        for name, law in LAWS.items():
            ratio = law(*a.fans) / law(*b.fans)
            if max(ratio, 1 / ratio) >= DISTINCT:
                ruled_out.add(name)
    if ruled_out == set(LAWS):
        return "constant"
    fitting = []
    for name, law in LAWS.items():
        logs = [math.log(w.std / law(*w.fans)) for w in weights]
        center = sorted(logs)[len(logs) // 2]
        spread_fans = max(law(*w.fans) for w in weights) / min(law(*w.fans) for w in weights)
        # one constant within 10% of each weight's, allowing each its sampling noise (3 x 1/sqrt(2n))
        fits = all(abs(v - center) <= math.log(1 + EQUAL) + 3 / math.sqrt(2 * w.numel) for v, w in zip(logs, weights))
        if fits and spread_fans >= DISTINCT:
            fitting.append(name)
    return fitting[0] if len(fitting) == 1 else None


@torch.no_grad()
def initialize(root: nn.Module, plan: Plan, base: nn.Module | None,
               base_name: Callable[[str], str | None], family: dict | None, rescale: bool) -> dict[str, float]:
    """Re-scale (or redraw, for ``init=<sigma>``) every parameter of ``root`` as the plan says; fills
    ``ParamRecord.init_source`` and ``ParamRecord.base_std``; returns the factor each rescaled parameter was
    multiplied by. Decides everything first and changes nothing when it raises InitError.

    Where the base std comes from, in this order: a constant (zeros, ones) stays; the family's init law (an
    adapter) gives the ratio of its stds at the two shapes; PyTorch's default init, recognised in the model and
    (where there is one) in the real base, gives it exactly; a real base is measured (for a module at the base's
    shape only when its std differs from the model's beyond sampling noise: an init that depends on the width
    even where the shape does not, such as T5's relative attention bias); a module at the base's shape keeps its
    own init; a custom init's law is inferred from the model's weights.
    """
    modules = dict(root.named_modules())
    params = dict(root.named_parameters())
    base_params = dict(base.named_parameters(remove_duplicate=False)) if isinstance(base, nn.Module) else {}
    base_modules = dict(base.named_modules()) if isinstance(base, nn.Module) else {}
    family = family or {}
    if plan.init == "keep" or (plan.init == "rescale" and not rescale):
        for rec in plan.params.values():
            rec.init_source = "kept: the model's own values" + ("" if plan.init == "keep" else " (the scheme keeps SP init)")
        return {}
    if not isinstance(plan.init, str):
        for name, rec in plan.params.items():
            owner_name, _, leaf = name.rpartition(".")
            _sigma_init(params[name], rec, modules[owner_name], leaf, float(plan.init))
            rec.init_source = f"init={plan.init:g} (redrawn by role)"
        record_base_stds(root, plan)
        return {}
    if any(rec.shape != rec.base_shape for rec in plan.params.values()):
        evidence = not_fresh(root, plan, base, base_name)
        if evidence:
            raise InitError(
                f"init='rescale' multiplies a fresh init by the rule's factors, but these weights are not a fresh "
                f"init: {'; '.join(evidence[:3])}{' ...' if len(evidence) > 3 else ''} ({len(evidence)} in all). "
                "For loaded (pretrained or trained) weights pass init='keep'; to draw new ones, build the model "
                "afresh or pass init=<sigma>. If you re-initialized the model yourself after building it, do the "
                "same to the base (or build the base on the meta device). Nothing was changed.")
    # A bias keeps its base shape while its default std follows the weight's fan-in, so "at base shape" is
    # decided per owner module, over all of its parameters (aliases included).
    at_base_shape: dict[str, bool] = {}
    for rec in plan.params.values():
        for alias in [rec.name, *rec.aliases]:
            owner = alias.rpartition(".")[0]
            at_base_shape[owner] = at_base_shape.get(owner, True) and rec.shape == rec.base_shape
    ratios: dict[str, float] = {}
    custom: dict[str, Weight] = {}
    loaded: list[str] = []
    for name, rec in plan.params.items():
        param = params[name]
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        current = float(param.float().std()) if param.numel() > 1 else 0.0
        matched = base_name(name)
        base_param = base_params.get(matched) if matched else None
        base_std = None
        if base_param is not None and not base_param.is_meta:
            base_std = float(base_param.float().std()) if base_param.numel() > 1 else 0.0
        default = is_pytorch_default(owner, leaf, param) and (
            base_std is None or is_pytorch_default(base_modules.get(matched.rpartition(".")[0]), leaf, base_param))
        noise = 0.2 + 4.0 / math.sqrt(max(param.numel(), 1))
        if current == 0.0:
            rec.init_source = "constant init (zeros, ones): width-independent"
        elif name in family:
            known = family[name]
            if abs(current / known.model - 1) > noise:
                loaded.append(f"{name} (std {current:.4g}, the family's init gives {known.model:.4g})")
            ratios[name] = known.base / known.model * rec.init_std
            rec.init_source = known.source
        elif default and not at_base_shape.get(owner_name, True):
            weight_rec = plan.params.get(f"{owner_name}.weight" if owner_name else "weight")
            fan_in_mult = weight_rec.fan_in_mult if weight_rec is not None else 1.0
            ratios[name] = math.sqrt(fan_in_mult) * rec.init_std
            rec.init_source = "PyTorch default (uniform +-1/sqrt(fan_in), recognised): base std x sqrt(m_in)"
        elif base_std is not None and not (at_base_shape.get(owner_name, True) and abs(base_std / current - 1) <= noise):
            ratios[name] = base_std * rec.init_std / current if base_std else 1.0
            rec.init_source = "measured on the (real) base"
        elif at_base_shape.get(owner_name, True):
            rec.init_source = "the model's own init (its module is at base shape)"
        elif isinstance(owner, (nn.Embedding, nn.EmbeddingBag)) and abs(current - 1) < 0.1:
            ratios[name] = rec.init_std
            rec.init_source = "PyTorch default embedding N(0, 1): width-independent"
        elif param.dim() >= 2:
            custom[name] = Weight(name, current, fans(rec, rec.shape), fans(rec, rec.base_shape), param.numel())
        else:  # a non-zero custom vector (bias, gain): follows its owner's weight's law below
            custom[name] = Weight(name, current, (1.0, 1.0), (1.0, 1.0))
    if loaded:
        raise InitError(
            f"init='rescale' expects the family's fresh init, but {len(loaded)} weight(s) differ from it: "
            f"{'; '.join(loaded[:3])}{' ...' if len(loaded) > 3 else ''}. For pretrained or already-trained "
            "weights pass init='keep'; to redraw, pass init=<sigma> or a real (non-meta) base.")
    if custom:
        # the model's other weights of the same module classes come from the same init code: they pin its law too
        classes = {type(modules[n.rpartition(".")[0]]) for n in custom}
        peers = [Weight(n, float(params[n].float().std()), fans(r, r.shape), fans(r, r.base_shape), params[n].numel())
                 for n, r in plan.params.items() if n not in custom and params[n].dim() >= 2
                 and type(modules[n.rpartition(".")[0]]) in classes and params[n].numel() > 1
                 and float(params[n].float().std()) > 0]
        _custom_ratios(plan, custom, ratios, peers)
    for name, ratio in ratios.items():
        if abs(ratio - 1.0) > 1e-12:
            params[name].mul_(ratio)
    record_base_stds(root, plan)
    return {name: ratio for name, ratio in ratios.items() if abs(ratio - 1.0) > 1e-12}


def record_base_stds(root: nn.Module, plan: Plan) -> None:
    """``ParamRecord.base_std``: the std the base has where the model now has std x the rule's factor (None for a
    constant tensor)."""
    params = dict(root.named_parameters())
    for name, rec in plan.params.items():
        param = params[name]
        std = float(param.detach().float().std()) if param.numel() > 1 and not param.is_meta else 0.0
        rec.base_std = std / rec.init_std if std > 0 and rec.init_std > 0 else None


def _custom_ratios(plan: Plan, custom: dict[str, Weight], ratios: dict[str, float],
                   peers: list[Weight] = ()) -> None:
    matrices = [w for w in custom.values() if w.fans != (1.0, 1.0)] + list(peers)
    law = infer_law(matrices) if len(matrices) >= 2 else None
    moving = [w.name for w in custom.values() if _moves(w, plan.params[w.name])]
    if law is None and moving:
        raise InitError(
            f"init: {len(moving)} weight(s) have a custom init ({', '.join(moving[:4])}"
            f"{' ...' if len(moving) > 4 else ''}) with no real base value to measure (a meta base, or a layer "
            "of a block the base lacks), and hptransfer cannot tell whether their std is a constant (like "
            "N(0, 0.02)) or shrinks with width (like N(0, 1/fan_in)): the model's weights do not rule out either. "
            "Pass a real base as deep as the model (it is small: build it on the CPU instead of the meta device), "
            "or init=<sigma> to redraw every weight with std sigma x the rule's factor, or init='keep'.")
    law_fn = LAWS.get(law or "", lambda fan_in, fan_out: 1.0)
    for w in custom.values():
        rec = plan.params[w.name]
        if w.fans == (1.0, 1.0):  # vector: its owner's weight decides, else width-independent
            owner_weight = w.name.rpartition(".")[0] + ".weight"
            ratios[w.name] = ratios.get(owner_weight, rec.init_std)
            rec.init_source = f"custom init of a vector: follows {owner_weight}" if owner_weight in ratios else \
                "custom init of a vector: width-independent"
            continue
        base_std = w.std * law_fn(*w.base_fans) / law_fn(*w.fans)
        ratios[w.name] = base_std * rec.init_std / w.std
        rec.init_source = (f"custom init, law '{law}' inferred from the model's weights"
                           if law else "custom init at a width-independent shape")


def _moves(weight: Weight, rec: ParamRecord) -> bool:
    """Whether some candidate law would give this weight a different base std than its own."""
    if weight.fans == (1.0, 1.0):
        return False
    return any(abs(law(*weight.base_fans) / law(*weight.fans) - 1) > 1e-9 for law in LAWS.values())


def _sigma_init(param: torch.Tensor, rec: ParamRecord, owner: nn.Module, leaf: str, sigma: float) -> None:
    """Re-initialize by role with global std sigma: weights N(0, (sigma * init factor)^2), biases 0."""
    if isinstance(owner, hnn.Readout) and owner.zero_init:
        param.zero_()
    elif param.dim() >= 2 or isinstance(owner, (nn.Embedding, nn.EmbeddingBag)):
        param.normal_(0.0, sigma * rec.init_std)
    elif leaf == "bias":
        param.zero_()
    elif param.numel() > 1 and float(param.float().std()) > 0:
        param.normal_(0.0, sigma * rec.init_std)
