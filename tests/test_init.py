"""Init with a meta base: PyTorch's default recognised exactly, custom laws inferred or refused, never guessed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hptransfer as hpt
from hptransfer.install.init import Weight, infer_law, is_pytorch_default
from hptransfer.models import PlainGPT, PlainMLP

from conftest import meta

BASE = 64


def weight(name: str, std: float, fan_in: float, fan_out: float) -> Weight:
    return Weight(name, std, (fan_in, fan_out), (fan_in, fan_out))


def test_infer_law_from_derived_cases():
    d = 512.0
    # Llama-like N(0, 0.02): q (d -> d), up (d -> 2d), down (2d -> d) all equal: every width law ruled out
    constant = [weight("q", 0.02, d, d), weight("up", 0.02, d, 2 * d), weight("down", 0.02, 2 * d, d),
                weight("k", 0.02, d, d / 2)]
    assert infer_law(constant) == "constant"
    # kaiming-normal: std = 1/sqrt(fan_in) fits with one constant; "constant" is not forced by any equal pair
    fan_in_law = [weight(w.name, 1 / math.sqrt(w.fans[0]), *w.fans) for w in constant]
    assert infer_law(fan_in_law) == "fan_in"
    # xavier: std = sqrt(2 / (fan_in + fan_out)): up and down are equal, yet the law is not constant
    xavier = [weight(w.name, math.sqrt(2 / sum(w.fans)), *w.fans) for w in constant]
    assert infer_law(xavier) == "fan_avg"
    # only d -> d weights at 0.02: constant and every law fit equally: ambiguous
    assert infer_law([weight("a", 0.02, d, d), weight("b", 0.02, d, d)]) is None


def test_pytorch_default_is_recognised_by_its_bounds_not_its_std():
    for fan_in in (256, 470, 1000, 1300):  # fan-ins where N(0, 0.02) is within 25% of the default std
        torch.manual_seed(0)
        layer = nn.Linear(fan_in, 256)
        assert is_pytorch_default(layer, "weight", layer.weight)
        assert is_pytorch_default(layer, "bias", layer.bias)
        with torch.no_grad():
            layer.weight.normal_(0.0, 0.02)
        assert not is_pytorch_default(layer, "weight", layer.weight)  # the negative control


@pytest.mark.parametrize("width", [128, 256, 512, 1024, 2048])
def test_nanogpt_init_gets_the_base_std_times_sqrt_base_fan_in_over_fan_in(width):
    # N(0, 0.02), output projections N(0, 0.02 / sqrt(2 n_layer)); no adapter, meta base
    model = PlainGPT(d_model=width, n_layer=2, n_head=4, vocab_size=96, block_size=32, init_std=0.02)
    plan = hpt.parametrize(model, meta(PlainGPT, d_model=BASE, n_layer=2, n_head=4, vocab_size=96,
                                       block_size=32, init_std=0.02), "mup", base_head_dim=BASE // 4)
    for name, param in model.named_parameters():
        rec = plan.record(name)
        if rec.role != "hidden":
            continue
        base_std = 0.01 if (name.endswith("c_proj.weight") or name.endswith("mlp.2.weight")) else 0.02
        assert float(param.detach().std()) == pytest.approx(base_std / math.sqrt(rec.fan_in_mult), rel=0.10), name
        assert "law 'constant'" in rec.init_source


def test_default_init_model_is_still_rescaled_by_fan_in():
    torch.manual_seed(0)
    model = PlainMLP(1024, depth=3)
    plan = hpt.parametrize(model, meta(PlainMLP, BASE, depth=3), "mup")
    hidden = model[2].weight
    # default std 1/sqrt(3 * 64) at the base, times sqrt(64 / 1024)
    assert float(hidden.detach().std()) == pytest.approx(1 / math.sqrt(3 * BASE) * math.sqrt(BASE / 1024), rel=0.05)
    assert "PyTorch default" in plan.record("2.weight").init_source


def test_constant_init_is_told_apart_by_layers_of_other_fan_in():
    model = PlainMLP(512, depth=3)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.02)  # the 32 -> width input layer has the same std
    plan = hpt.parametrize(model, meta(PlainMLP, BASE, depth=3), "mup")
    assert "law 'constant'" in plan.record("2.weight").init_source
    assert float(model[2].weight.detach().std()) == pytest.approx(0.02 * math.sqrt(BASE / 512), rel=0.1)


def test_ambiguous_custom_init_is_refused_naming_init_and_changes_nothing():
    def build(width: int, device: str = "cpu") -> PlainMLP:
        with torch.device(device):
            model = PlainMLP(width, depth=3)
        if device != "meta":  # only the two width x width layers: nothing tells a constant from a width law
            for layer in (model[2], model[4]):
                nn.init.normal_(layer.weight, 0.0, 0.02)
        return model

    model = build(512)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(hpt.InitError, match=r"init.*real base.*init=<sigma>"):
        hpt.parametrize(model, build(BASE, "meta"), "mup")
    assert hpt.get_plan(model) is None
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    # the fixes it names work: a real base is measured, and a sigma redraws
    plan = hpt.parametrize(model, build(BASE), "mup")
    assert float(model[2].weight.detach().std()) == pytest.approx(0.02 * math.sqrt(BASE / 512), rel=0.1)
    assert plan.record("2.weight").init_source == "measured on the (real) base"
    other = build(512)
    hpt.parametrize(other, build(BASE, "meta"), "mup", init=0.02)
    assert float(other[2].weight.detach().std()) == pytest.approx(0.02 * math.sqrt(BASE / 512), rel=0.1)
