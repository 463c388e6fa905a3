"""parametrize(): roles on plain and native models, identity at base shape, init, attention, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hptransfer as hpt
from hptransfer.rules import OPTIMIZER_FAMILIES
from hptransfer.models import GPT, PlainGPT, PlainMLP, PlainResMLP, ResMLP

from conftest import meta

GPT_BRANCHES = ["blocks.*.attn", "blocks.*.mlp"]


def roles(plan: hpt.Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rec in plan.params.values():
        out.setdefault(rec.role, []).append(rec.name)
    return out


# ---- roles ---------------------------------------------------------------------------------------
def test_plain_mlp_roles_and_factors():
    model = PlainMLP(256)
    plan = hpt.parametrize(model, meta(PlainMLP, 64), "mup")
    assert plan.record("0.weight").role == "input"
    assert plan.record("2.weight").role == "hidden"
    assert plan.record("4.weight").role == "output"
    assert plan.record("4.bias").role == "scalar"  # class-count bias: no width dim
    assert plan.record("0.bias").role == "vector"
    hidden = plan.record("2.weight")
    assert hidden.lr["adam"] == pytest.approx(1 / 4) and hidden.weight_decay["adam"] == pytest.approx(4)
    assert hidden.init_std == pytest.approx(0.5)
    assert plan.record("0.weight").lr["sgd"] == pytest.approx(4)  # fan_out
    assert plan.record("4.weight").lr["sgd"] == pytest.approx(4)  # fan_in
    assert plan.record("4.weight").multiplier == pytest.approx(1 / 4)
    assert all(r.eps == pytest.approx(1 / 4) for r in plan.params.values())


@pytest.mark.parametrize("fused", [True, False])
def test_plain_gpt_matches_native_gpt_rules(fused):
    """The plain GPT wrapped with globs gets the same per-role factors as the GPT written with hpt.nn."""
    plain = PlainGPT(d_model=128, n_layer=4, fused_qkv=fused)
    native = GPT(d_model=128, n_layer=4, fused_qkv=fused)
    p1 = hpt.parametrize(plain, meta(PlainGPT, 32, 2, fused_qkv=fused), "completep", branches=GPT_BRANCHES,
                         base_head_dim=8)
    p2 = hpt.parametrize(native, meta(GPT, 32, 2, fused_qkv=fused), "completep")
    assert p1.depth_mult == p2.depth_mult == 2
    assert p1.width_mult == p2.width_mult == 4

    def summary(plan):
        return sorted((r.role, bool(r.block), tuple(sorted(r.lr.items())), r.eps, r.init_std)
                      for r in plan.params.values())
    assert summary(p1) == summary(p2)
    assert [m.factor for m in p1.modules if m.kind == "branch"] == [0.5] * 8
    assert native.blocks[0].attn.multiplier == 0.5
    assert native.lm_head.multiplier == pytest.approx(0.25)
    # native attention got sqrt(base_hd / hd) = sqrt(8 / 32)
    assert native.blocks[0].attn.branch[1].logit_scale_factor == pytest.approx(0.5)


def test_resmlp_plain_and_native_depth_rules():
    plain = PlainResMLP(64, depth=8)
    native = ResMLP(64, depth=8)
    p1 = hpt.parametrize(plain, meta(PlainResMLP, 64, 2), "depth_mup", branches="blocks.*.branch")
    p2 = hpt.parametrize(native, meta(ResMLP, 64, 2), "depth_mup")
    for plan in (p1, p2):
        assert plan.depth_mult == 4
        block = [r for r in plan.params.values() if r.block]
        assert block and all(r.lr["adam"] == pytest.approx(0.5) for r in block)  # m_L^-1/2
        assert all(r.eps == pytest.approx(0.5) for r in block)
        outside = [r for r in plan.params.values() if not r.block]
        assert {r.name.split(".")[0] for r in outside} == {"inp", "norm", "out"}
        assert all(r.lr["adam"] == 1 for r in outside)
    assert native.blocks[3].multiplier == pytest.approx(0.5)


def test_resnet_conv_roles():
    from hptransfer.models import ResNet

    plan = hpt.parametrize(ResNet(64, 4), meta(ResNet, 16, 2), "depth_mup")
    assert plan.record("stem.weight").role == "input"  # 1 -> width channels
    assert plan.record("blocks.0.branch.2.weight").role == "hidden"  # conv width -> width (kernel dims finite)
    assert plan.record("blocks.0.branch.2.weight").lr["adam"] == pytest.approx(1 / 4 * 2 ** -0.5)
    assert plan.record("blocks.0.branch.0.weight").role == "vector"  # GroupNorm gain
    assert plan.record("out.weight").role == "output" and plan.depth_mult == 2


# ---- base shape is the plain model ------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["mup", "depth_mup", "completep"])
def test_at_base_shape_bit_for_bit(scheme):
    torch.manual_seed(0)
    model = PlainGPT(d_model=64, n_layer=2)
    twin = copy.deepcopy(model)
    plan = hpt.parametrize(model, meta(PlainGPT, 64, 2), scheme, branches=GPT_BRANCHES, base_head_dim=16)
    assert all(r.lr == {family: 1.0 for family in OPTIMIZER_FAMILIES} and r.eps == 1.0 and r.init_std == 1.0
               for r in plan.params.values())
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randint(0, 96, (4, 32))
    opt_a = torch.optim.AdamW(hpt.param_groups(model, lr=1e-3, weight_decay=0.1))
    opt_b = torch.optim.AdamW(twin.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(3):
        for m, opt in ((model, opt_a), (twin, opt_b)):
            loss = F.cross_entropy(m(x).flatten(0, 1), x.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.equal(model(x), twin(x))


# ---- tied embeddings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PlainGPT, GPT])
def test_tied_embeddings(cls):
    torch.manual_seed(0)
    model = cls(d_model=128, tie_embeddings=True)
    emb_before = model.wte.weight.detach().clone()
    plan = hpt.parametrize(model, meta(cls, 32, tie_embeddings=True), "mup", base_head_dim=8)
    assert model.lm_head.weight is model.wte.weight
    rec = plan.record("wte.weight")
    assert rec.role == "input" and rec.aliases == ["lm_head.weight"] and rec.lr["adam"] == 1.0
    assert "lm_head.weight" not in plan.params
    assert torch.equal(model.wte.weight, emb_before)  # constant init: never rescaled (mup issue #55)
    readout = [m for m in plan.modules if m.kind == "readout"]
    assert [(m.name, m.factor) for m in readout] == [("lm_head", pytest.approx(0.25))]
    groups = hpt.param_groups(model, lr=1.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # the multiplier acts on the readout use only: embeddings of the tokens are unscaled
    h = torch.randn(2, 3, 128)
    expected = F.linear(h * 0.25, model.wte.weight)
    assert torch.allclose(model.lm_head(h), expected)


# ---- init ---------------------------------------------------------------------------------------------
def test_rescale_init_follows_table8():
    stds = {}
    for width in (64, 1024):
        torch.manual_seed(0)
        model = PlainMLP(width, d_in=32)
        hpt.parametrize(model, meta(PlainMLP, 64, d_in=32), "mup")
        stds[width] = {n: float(p.detach().std()) for n, p in model.named_parameters()}
    ratio = {n: stds[1024][n] / stds[64][n] for n in stds[64]}
    assert ratio["0.weight"] == pytest.approx(1, rel=0.05)  # input: constant
    assert ratio["2.weight"] == pytest.approx(0.25, rel=0.05)  # hidden: 1/sqrt(m_fanin) = 1/4
    assert ratio["4.weight"] == pytest.approx(1, rel=0.1)  # readout: constant (Table 8)
    assert ratio["2.bias"] == pytest.approx(1, rel=0.1)  # biases: constant


def test_rescale_uses_real_base_std():
    torch.manual_seed(0)
    base = PlainMLP(64)
    with torch.no_grad():
        base[2].weight.normal_(0, 0.05)
    model = PlainMLP(256)
    with torch.no_grad():
        model[2].weight.normal_(0, 0.3)
    hpt.parametrize(model, base, "mup")
    assert float(model[2].weight.detach().std()) == pytest.approx(0.05 / 2, rel=0.03)


def test_sigma_init_by_role():
    model = PlainMLP(256)
    hpt.parametrize(model, meta(PlainMLP, 64), "mup", init=0.02)
    assert float(model[0].weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert float(model[2].weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(model[4].weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(model[2].bias) == 0


def test_keep_init_leaves_weights():
    model = PlainMLP(256)
    before = copy.deepcopy(model.state_dict())
    hpt.parametrize(model, meta(PlainMLP, 64), "mup", init="keep")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- attention ------------------------------------------------------------------------------------------
class SDPAOnly(nn.Module):
    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(head_dim, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)
        return F.scaled_dot_product_attention(q, q, x)


def test_sdpa_in_unchanged_model_gets_mup_scale():
    model = SDPAOnly(64)
    x = torch.randn(2, 3, 5, 64)
    hpt.parametrize(model, {"proj.weight": (16, 16), "proj.bias": (16,)}, "mup", base_head_dim=16,
                    multipliers={"attn": 2.0})
    q = model.proj(x)
    expected = F.scaled_dot_product_attention(q, q, x, scale=2.0 * math.sqrt(16) / 64)
    assert torch.allclose(model(x), expected, atol=1e-6)
    # outside the model's forward the function is untouched
    assert torch.allclose(F.scaled_dot_product_attention(q, q, x),
                          F.scaled_dot_product_attention(q, q, x, scale=64 ** -0.5))


# ---- persistence ---------------------------------------------------------------------------------------
def test_survives_deepcopy_and_state_dict():
    model = PlainGPT(d_model=128, n_layer=2)
    hpt.parametrize(model, meta(PlainGPT, 32, 2), "mup", base_head_dim=8)
    names_before = list(model.state_dict())
    clone = copy.deepcopy(model)
    x = torch.randint(0, 96, (2, 8))
    assert torch.equal(clone(x), model(x))
    assert hpt.get_plan(clone) is not None
    assert list(clone.state_dict()) == names_before  # no renamed or extra entries
    fresh = PlainGPT(d_model=128, n_layer=2)
    hpt.parametrize(fresh, meta(PlainGPT, 32, 2), "mup", base_head_dim=8, init="keep")
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), model(x))


def test_plan_json_round_trip(tmp_path):
    model = PlainGPT(d_model=64, n_layer=4, tie_embeddings=True)
    plan = hpt.parametrize(model, meta(PlainGPT, 32, 2, tie_embeddings=True), "completep",
                           branches=GPT_BRANCHES, multipliers={"output": 2.0})
    again = hpt.Plan.load(plan.save(tmp_path / "plan.json"))
    assert again == plan
    text = str(plan)
    assert "blocks.3.mlp.2.weight" in text and "hidden" in text and "completep" in text


# ---- bad input: a clear error, and nothing changed -------------------------------------------------------
def _unchanged(model: nn.Module, before: dict) -> bool:
    return (hpt.get_plan(model) is None and not model._forward_hooks and not model._forward_pre_hooks
            and all(torch.equal(before[k], v) for k, v in model.state_dict().items()))


BAD_CALLS = {
    "name mismatch": (lambda: PlainMLP(128), lambda: {"0.weight": (64, 32)}, {}, hpt.BaseShapeError,
                      "no counterpart in the base"),
    "readout not a readout": (lambda: PlainGPT(64, 2), lambda: meta(PlainGPT, 32, 2),
                              {"readout": "blocks.*.mlp.2"}, hpt.ReadoutError,
                              "'blocks.0.mlp.2' does not map a width dim to a fixed one"),
    "no branches": (lambda: PlainResMLP(64, 4), lambda: meta(PlainResMLP, 64, 2), {"scheme": "completep"},
                    hpt.BranchError, "branches="),
    "glob matches nothing": (lambda: PlainResMLP(64, 4), lambda: meta(PlainResMLP, 64, 2),
                             {"scheme": "completep", "branches": "block.*"}, hpt.BranchError, "matched no module"),
    "unknown scheme": (lambda: PlainMLP(128), lambda: meta(PlainMLP, 64), {"scheme": "mu-p"}, hpt.SchemeError,
                       "unknown scheme"),
    "bad multiplier": (lambda: PlainMLP(128), lambda: meta(PlainMLP, 64), {"multipliers": {"outptu": 2}},
                       hpt.SchemeError, "unknown multiplier"),
    "rank mismatch": (lambda: PlainMLP(128), lambda: {**{n: tuple(p.shape) for n, p in
                                                         meta(PlainMLP, 64).named_parameters()},
                                                      "2.weight": (64,)}, {}, hpt.BaseShapeError, "ranks differ"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_and_changes_nothing(case):
    make_model, make_base, kwargs, error, message = BAD_CALLS[case]
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=message):
        hpt.parametrize(model, make_base(), **kwargs)
    assert _unchanged(model, before)


def test_every_width_to_fixed_layer_is_a_readout_and_one_takes_the_output_multiplier():
    class TwoHeads(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.body = nn.Linear(8, width)
            self.head_a = nn.Linear(width, 3)
            self.head_b = nn.Linear(width, 4)

        def forward(self, x):
            h = self.body(x)
            return self.head_a(h), self.head_b(h)

    def readouts(plan):
        return {m.name: m.factor for m in plan.modules if m.kind == "readout"}

    # both get mu-P's 1/m; the output multiplier goes to the one that runs last (a probe) or is registered last
    plan = hpt.parametrize(TwoHeads(64), meta(TwoHeads, 16), multipliers={"output": 2.0})
    assert readouts(plan) == {"head_a": pytest.approx(0.25), "head_b": pytest.approx(0.5)}
    plan = hpt.parametrize(TwoHeads(64), meta(TwoHeads, 16), multipliers={"output": 2.0}, readout="head_a")
    assert readouts(plan) == {"head_a": pytest.approx(0.5), "head_b": pytest.approx(0.25)}


def test_parametrize_twice():
    model = PlainMLP(128)
    hpt.parametrize(model, meta(PlainMLP, 64))
    with pytest.raises(hpt.AlreadyParametrizedError, match="already parametrized"):
        hpt.parametrize(model, meta(PlainMLP, 64))
    hpt.unparametrize(model)
    hpt.parametrize(model, meta(PlainMLP, 64), init="keep")


def test_delta_finds_readout_at_base_shape():
    """A proxy equal to the base still gets the output multiplier when a delta shows the width dims."""
    model = PlainMLP(64)
    with pytest.raises(hpt.ReadoutError, match="no readout was found"):
        hpt.parametrize(model, meta(PlainMLP, 64), multipliers={"output": 2.0})
    plan = hpt.parametrize(model, meta(PlainMLP, 64), multipliers={"output": 2.0}, delta=meta(PlainMLP, 128))
    assert plan.record("4.weight").role == "output" and plan.record("2.weight").role == "hidden"
    assert [(m.name, m.factor) for m in plan.modules if m.kind == "readout"] == [("4", 2.0)]
