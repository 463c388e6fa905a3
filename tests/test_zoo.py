"""The model zoo (tests/zoo.py): every variant is parametrized as a user would and is either right, measured
against a real base at run time (tests/zoo_measure.py), or refused with an HptError naming the true cause."""

from __future__ import annotations

import pytest
import torch

import hptransfer as hpt

from zoo import BASE, WIDTH, ZOO, Variant
from zoo_measure import compare, scale_problems

pytestmark = pytest.mark.slow
SEEDS = (4, 12, 24)  # draws of the model and of its base whose quantities are averaged: more while one is off


def _set_impl(model: torch.nn.Module, impl: str) -> None:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = impl


def _base(variant: Variant, depth: int, meta: bool) -> torch.nn.Module:
    if meta:
        with torch.device("meta"):
            return variant.build(BASE, depth)
    torch.manual_seed(1)
    return variant.build(BASE, depth)


@pytest.mark.parametrize("variant", ZOO, ids=[v.name for v in ZOO])
def test_zoo_member_is_right_or_refused_with_its_cause(variant: Variant):
    pytest.importorskip("transformers") if variant.source == "transformers" else None
    torch.manual_seed(0)
    model = variant.build(WIDTH, variant.depth)
    base = _base(variant, variant.base_depth, variant.meta_base)
    kwargs = dict(variant.kwargs)
    scheme = kwargs.pop("scheme", "mup")
    inputs = variant.inputs()
    if variant.refused is not None:
        error, pattern = variant.refused
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with pytest.raises(error, match=pattern):
            hpt.parametrize(model, base, scheme, example_inputs=inputs, **kwargs)
        assert hpt.get_plan(model) is None
        assert all(torch.allclose(before[n], p, rtol=1e-5, atol=0) for n, p in model.named_parameters())
        return
    plan = hpt.parametrize(model, base, scheme, example_inputs=inputs, **kwargs)
    m = WIDTH / BASE
    # the oracle: real bases as deep as the model. Activations and stds are averaged over draws of model and
    # base (a 32-wide product of random matrices is off by 10-20% in one draw): SEEDS first, more if one is off
    models, oracles = [model], []
    branches = {m.name: m.factor for m in plan.modules if m.kind == "branch"} if plan.depth_alpha else None
    for count in SEEDS:
        while len(oracles) < count:
            torch.manual_seed(100 + len(oracles))
            oracles.append(variant.build(BASE, variant.depth))
            if len(models) < count:
                torch.manual_seed(len(models))
                models.append(variant.build(WIDTH, variant.depth))
                hpt.parametrize(models[-1], _base(variant, variant.base_depth, variant.meta_base), scheme,
                                example_inputs=inputs, **kwargs)
        problems = compare(models, oracles, inputs, variant.readouts, m, branches)
        if not problems:
            break
    oracle = oracles[0]
    for impl in variant.impls or (None,):
        if impl is not None:
            _set_impl(model, impl)
            _set_impl(oracle, impl)
        problems += [f"[{impl}] {p}" for p in scale_problems(model, oracle, inputs)]
    # Adam LR: hidden 1/m, the rest 1, times the depth rule in blocks
    alpha = plan.depth_alpha
    depth_lr = (variant.depth / variant.base_depth) ** (alpha - 1) if alpha is not None else 1.0
    oracle_params = dict(oracle.named_parameters())
    for group in hpt.param_groups(model, lr=1.0, optimizer="adamw"):
        for param in group["params"]:
            name = next(n for n, p in model.named_parameters() if p is param)
            shape, base_shape = tuple(param.shape), tuple(oracle_params[name].shape)
            width = 1 / m if sum(a != b for a, b in zip(shape, base_shape)) >= 2 else 1.0
            in_block = plan.record(name).block is not None
            expected = width * (depth_lr if in_block else 1.0)
            if abs(group["lr"] / expected - 1) > 1e-6:
                problems.append(f"Adam LR of {name}: x{group['lr']:.4g}, mu-P x{expected:.4g}")
    assert not problems, "\n".join(problems)
    assert plan.check is not None and (plan.check.get("ran", False) or plan.depth_mult != 1.0), plan.check
