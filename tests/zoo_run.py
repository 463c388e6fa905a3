"""Running one zoo member as a user would, and measuring it (tests/test_zoo.py and bench/zoo_table.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

import hptransfer as hpt

from zoo import BASE, WIDTH, Variant
from zoo_measure import compare, scale_problems

SEEDS = (4, 12, 24)  # draws of the model and of its base whose quantities are averaged: more while one is off


@dataclass
class Outcome:
    """What happened to one zoo member: refused (with the error) or parametrized and measured."""

    refused: str | None = None  # "ErrorType: message"
    problems: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)  # worst relative error per quantity
    seeds: int = 0
    check: dict | None = None
    seconds: float = 0.0
    unchanged: bool = True  # a refused model's weights and plan were left as they came


def set_impl(model: torch.nn.Module, impl: str) -> None:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = impl


def base_of(variant: Variant, depth: int, meta: bool) -> torch.nn.Module:
    if meta:
        with torch.device("meta"):
            return variant.build(BASE, depth)
    torch.manual_seed(1)
    return variant.build(BASE, depth)


def evaluate(variant: Variant) -> Outcome:
    """Parametrize the member (mu-P unless it says otherwise); measure it against real bases, or catch the
    refusal."""
    outcome = Outcome()
    torch.manual_seed(0)
    model = variant.build(WIDTH, variant.depth)
    base = base_of(variant, variant.base_depth, variant.meta_base)
    kwargs = dict(variant.kwargs)
    scheme = kwargs.pop("scheme", "mup")
    inputs = variant.inputs()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    started = time.perf_counter()
    try:
        plan = hpt.parametrize(model, base, scheme, example_inputs=inputs, **kwargs)
    except hpt.HptError as err:
        outcome.refused = f"{type(err).__name__}: {err}"
        outcome.seconds = time.perf_counter() - started
        outcome.unchanged = hpt.get_plan(model) is None and all(
            torch.allclose(before[n], p, rtol=1e-5, atol=0) for n, p in model.named_parameters())
        return outcome
    outcome.seconds = time.perf_counter() - started
    outcome.check = plan.check
    m = WIDTH / BASE
    # the oracle: real bases as deep as the model. Activations and stds are averaged over draws of model and
    # base (a 32-wide product of random matrices is off by 10-20% in one draw): SEEDS[0] first, more if one is off
    models, oracles = [model], []
    branches = {r.name: r.factor for r in plan.modules if r.kind == "branch"} if plan.depth_alpha else None
    for count in SEEDS:
        while len(oracles) < count:
            torch.manual_seed(100 + len(oracles))
            oracles.append(variant.build(BASE, variant.depth))
            if len(models) < count:
                torch.manual_seed(len(models))
                models.append(variant.build(WIDTH, variant.depth))
                hpt.parametrize(models[-1], base_of(variant, variant.base_depth, variant.meta_base), scheme,
                                example_inputs=inputs, **kwargs)
        outcome.stats = {}
        problems = compare(models, oracles, inputs, variant.readouts, m, branches, stats=outcome.stats)
        outcome.seeds = count
        if not problems:
            break
    oracle = oracles[0]
    for impl in variant.impls or (None,):
        if impl is not None:
            set_impl(model, impl)
            set_impl(oracle, impl)
        problems += [f"[{impl}] {p}" for p in scale_problems(model, oracle, inputs, stats=outcome.stats)]
    # Adam LR: hidden 1/m, the rest 1, times the depth rule in blocks
    alpha = plan.depth_alpha
    depth_lr = (variant.depth / variant.base_depth) ** (alpha - 1) if alpha is not None else 1.0
    oracle_params = dict(oracle.named_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    worst_lr = 0.0
    for group in hpt.param_groups(model, lr=1.0, optimizer="adamw"):
        for param in group["params"]:
            name = names[id(param)]
            shape, base_shape = tuple(param.shape), tuple(oracle_params[name].shape)
            width = 1 / m if sum(a != b for a, b in zip(shape, base_shape)) >= 2 else 1.0
            expected = width * (depth_lr if plan.record(name).block is not None else 1.0)
            worst_lr = max(worst_lr, abs(group["lr"] / expected - 1))
            if abs(group["lr"] / expected - 1) > 1e-6:
                problems.append(f"Adam LR of {name}: x{group['lr']:.4g}, mu-P x{expected:.4g}")
    outcome.stats["adam lr"] = worst_lr
    outcome.problems = problems
    return outcome
