"""Attention anywhere: SDPA and flex rescaled, hand-written attention found and refused, or reached by attribute."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hptransfer as hpt
from hptransfer.probe.attention import probe_attention
from hptransfer.models import PlainGPT

from conftest import meta

BASE, WIDTH, HEADS = 64, 256, 4
WANT = math.sqrt(BASE // HEADS) / (WIDTH // HEADS)  # mu-P: sqrt(d0) / d


def gpt(width: int, **kwargs) -> PlainGPT:
    return PlainGPT(d_model=width, n_layer=2, n_head=HEADS, vocab_size=96, block_size=32, **kwargs)


def tokens() -> torch.Tensor:
    return torch.randint(0, 96, (2, 16))


def literal_forward(self, x: torch.Tensor) -> torch.Tensor:
    """nanoGPT's manual attention: the scale is written out in the forward and kept nowhere."""
    batch, seq, width = x.shape
    q, k, v = self.c_attn(x).split(width, dim=2)
    q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
    logits = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    y = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
    return self.c_proj(y.transpose(1, 2).reshape(batch, seq, width))


def literal_gpt(width: int) -> PlainGPT:
    model = gpt(width, eager_attention=True)
    for block in model.blocks:
        block.attn.forward = literal_forward.__get__(block.attn)
    return model


def test_handwritten_attention_with_a_literal_scale_is_refused_on_first_forward_naming_attention():
    model = literal_gpt(WIDTH)
    hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup")
    with pytest.raises(hpt.AttentionError, match=r"blocks\.0\.attn.*hand-written.*no attribute of its module"):
        model(tokens())


def test_handwritten_attention_is_refused_at_parametrize_with_example_inputs_and_model_left_as_it_was():
    model = literal_gpt(WIDTH)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(hpt.AttentionError, match="hand-written"):
        hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup", example_inputs=tokens())
    assert hpt.get_plan(model) is None
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert model.blocks[0].attn.scale == (WIDTH // HEADS) ** -0.5


@pytest.mark.parametrize("named", [False, True])
def test_handwritten_attention_reached_through_its_attribute(named):
    """The attribute is found by changing it and measuring (no name needed); naming it checks it the same way."""
    model = gpt(WIDTH, eager_attention=True)
    plan = hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup",
                           attention={"blocks.*.attn": "scale"} if named else None)
    model(tokens())  # the first forward measures the attention
    calls = probe_attention(model, lambda: model(tokens()))
    assert [c.kind for c in calls] == ["softmax", "softmax"]
    assert all(c.scale == pytest.approx(WANT) for c in calls)
    assert plan.base_head_dim == BASE // HEADS
    hpt.unparametrize(model)
    assert model.blocks[0].attn.scale == pytest.approx((WIDTH // HEADS) ** -0.5)


def test_handwritten_attention_is_fine_where_its_scale_need_not_change():
    # width grows by adding heads at a fixed head dim: 1/sqrt(d) already equals sqrt(d0)/d
    model = PlainGPT(d_model=WIDTH, n_layer=1, n_head=WIDTH // 16, vocab_size=96, block_size=32, eager_attention=True)
    base = meta(PlainGPT, d_model=BASE, n_layer=1, n_head=BASE // 16, vocab_size=96, block_size=32,
                eager_attention=True)
    hpt.parametrize(model, base, "mup")
    model(tokens())  # no error
    # ... and SP never needs it
    sp = gpt(WIDTH, eager_attention=True)
    hpt.parametrize(sp, meta(gpt, BASE, eager_attention=True), "sp")
    sp(tokens())


def test_sdpa_gets_the_base_head_dim_from_a_meta_base():
    model = gpt(WIDTH)
    plan = hpt.parametrize(model, meta(gpt, BASE), "mup", example_inputs=tokens())
    assert plan.base_head_dim == BASE // HEADS
    calls = probe_attention(model, lambda: model(tokens()))
    assert [c.kind for c in calls] == ["sdpa", "sdpa"] and all(c.scale == pytest.approx(WANT) for c in calls)


def test_sdpa_with_a_shapes_only_base_asks_for_base_head_dim():
    model = gpt(WIDTH)
    hpt.parametrize(model, hpt.structure.shapes.shapes_of(meta(gpt, BASE)), "mup")
    with pytest.raises(hpt.AttentionError, match="base_head_dim="):
        model(tokens())
    fixed = gpt(WIDTH)
    hpt.parametrize(fixed, hpt.structure.shapes.shapes_of(meta(gpt, BASE)), "mup", base_head_dim=BASE // HEADS)
    fixed(tokens())
    calls = probe_attention(fixed, lambda: fixed(tokens()))
    assert all(c.scale == pytest.approx(WANT) for c in calls)


class FlexAttention(nn.Module):
    """Self-attention through torch's flex_attention (as torchtitan uses it)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        batch, seq, width = x.shape
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(width, -1))
        scale = self.scale if hasattr(self, "scale") else 1.0 / math.sqrt(self.head_dim)
        return self.out(flex_attention(q, k, v, scale=scale).transpose(1, 2).reshape(batch, seq, width))


class FlexModel(nn.Module):
    def __init__(self, width: int, literal: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.attn = FlexAttention(width, HEADS)
        if literal:  # the scale computed in the forward, kept nowhere
            del self.attn.scale
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.inp(x)))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_is_found_and_refused_then_reached_through_its_scale_attribute():
    x = torch.randn(2, 16, 8)
    with pytest.raises(hpt.AttentionError, match=r"'attn' is flex_attention.*scale="):
        hpt.parametrize(FlexModel(WIDTH, literal=True), meta(FlexModel, BASE), "mup", example_inputs=x)
    torch.manual_seed(0)
    model = FlexModel(WIDTH)
    hpt.parametrize(model, meta(FlexModel, BASE), "mup", example_inputs=x)
    assert model.attn.scale == pytest.approx(WANT)
    # the same computation with SDPA and the mu-P scale written out by hand
    attn = model.attn
    with torch.no_grad():
        h = model.inp(x)
        q, k, v = (t.view(2, 16, HEADS, -1).transpose(1, 2) for t in attn.qkv(h).split(WIDTH, -1))
        y = F.scaled_dot_product_attention(q, k, v, scale=WANT)
        expected = model.head(attn.out(y.transpose(1, 2).reshape(2, 16, WIDTH)))
        assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-4)


def test_attention_option_errors_name_the_problem():
    model = gpt(WIDTH, eager_attention=True)
    with pytest.raises(hpt.AttentionError, match="matched no module"):
        hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup", attention={"nope.*": "scale"})
    with pytest.raises(hpt.AttentionError, match="has no attribute 'nope'"):
        hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup", attention={"blocks.*.attn": "nope"})
    # an attribute that exists but sets no scale: found out by changing it
    for block in model.blocks:
        block.attn.unused = 1.0
    with pytest.raises(hpt.AttentionError, match="did not change the scale"):
        hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup", attention={"blocks.*.attn": "unused"},
                        example_inputs=tokens())


def test_sdpa_in_an_attribute_scaled_module_is_not_scaled_twice():
    # both blocks call SDPA with scale=self.scale; block 0's attribute is scaled, block 1 is intercepted
    model = gpt(WIDTH)
    hpt.parametrize(model, meta(gpt, BASE), "mup", attention={"blocks.0.attn": "scale"}, example_inputs=tokens())
    calls = probe_attention(model, lambda: model(tokens()))
    assert [(c.kind, c.module) for c in calls] == [("sdpa", "blocks.0.attn"), ("sdpa", "blocks.1.attn")]
    assert all(c.scale == pytest.approx(WANT) for c in calls)


def test_attribute_and_interception_together_each_scale_once():
    model = gpt(WIDTH, eager_attention=True)
    model.blocks[1].attn.eager = False  # block 0 hand-written (attribute), block 1 through SDPA (interception)
    base = meta(gpt, BASE, eager_attention=True)
    base.blocks[1].attn.eager = False
    hpt.parametrize(model, base, "mup", attention={"blocks.0.attn": "scale"}, example_inputs=tokens())
    calls = probe_attention(model, lambda: model(tokens()))
    assert [(c.kind, c.module) for c in calls] == [("softmax", "blocks.0.attn"), ("sdpa", "blocks.1.attn")]
    assert all(c.scale == pytest.approx(WANT) for c in calls)


# ---- measured scales: any head-dim attribute name, any convention ------------------------------------------------
def neox(width: int, impl: str = "sdpa") -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPTNeoXConfig(vocab_size=96, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=2, num_attention_heads=HEADS, max_position_embeddings=64,
                                        attn_implementation=impl)
    return transformers.GPTNeoXForCausalLM(config)


def set_impl(model: nn.Module, impl: str) -> None:
    model.config._attn_implementation = impl


def test_a_head_dim_under_another_name_gets_its_scale_in_every_implementation():
    """GPT-NeoX keeps its head dim in ``head_size``. The head dim now comes from q's shape and the attribute that
    sets the scale (``scaling``) is found by changing it, so the scale is right for eager and sdpa alike (before,
    only the sdpa call was rescaled and eager kept 1/sqrt(d), 4x mu-P's at width 256)."""
    from hf_models import MeasureLogitScale

    torch.manual_seed(0)
    model = neox(WIDTH)
    plan = hpt.parametrize(model, meta(neox, BASE), "mup")
    assert [(m.name, m.attribute) for m in plan.modules if m.kind == "attention"] == [
        ("gpt_neox.layers.0.attention", "scaling"), ("gpt_neox.layers.1.attention", "scaling")]
    set_impl(model, "eager")
    measure = MeasureLogitScale()
    x = tokens()
    with torch.no_grad(), measure:
        eager = model(x).logits
    assert len(measure.scales) == 2 and all(s == pytest.approx(WANT, rel=1e-4) for s in measure.scales)
    set_impl(model, "sdpa")
    with torch.no_grad():
        sdpa = model(x).logits
    assert float((eager - sdpa).norm() / sdpa.norm()) < 1e-5


class ConstantScale(nn.Module):
    """Attention that passes a constant scale to SDPA whatever its head dim (Gemma's query_pre_attn_scalar)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp, self.qkv, self.out = nn.Linear(8, width), nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        batch, seq, width = x.shape
        q, k, v = (t.view(batch, seq, HEADS, -1).transpose(1, 2) for t in self.qkv(x).split(width, -1))
        y = F.scaled_dot_product_attention(q, k, v, scale=256**-0.5)
        return self.out(y.transpose(1, 2).reshape(batch, seq, width))


def test_a_constant_scale_is_carried_over_with_one_over_d():
    """mu-P takes the base's scale s0 at head dim d0 to s0 * d0 / d: a constant 256^-1/2 at every width becomes
    256^-1/2 / 4 at 4x the head dim (the old interception assumed 1/sqrt(d) and gave 256^-1/2 / 2)."""
    x = torch.randn(2, 8, 8)
    model = ConstantScale(WIDTH)
    hpt.parametrize(model, meta(ConstantScale, BASE), "mup", example_inputs=x)
    calls = probe_attention(model, lambda: model(x))
    assert [c.scale for c in calls] == [pytest.approx(256**-0.5 * (BASE // HEADS) / (WIDTH // HEADS))]


def test_a_library_attention_named_by_its_scale_attribute_needs_no_head_dim_attribute():
    """attention={glob: "scaling"} on transformers' own eager attention: the head dim is measured, so no module
    has to carry an int ``head_dim`` (GPT-NeoX's is ``head_size``; before, this demanded editing the library)."""
    model = neox(WIDTH, impl="eager")
    plan = hpt.parametrize(model, meta(neox, BASE, impl="eager"), "mup", attention={"gpt_neox.layers.*.attention": "scaling"})
    assert plan.base_head_dim == BASE // HEADS
    assert model.gpt_neox.layers[0].attention.scaling == pytest.approx(WANT)


def test_an_attention_multiplier_on_a_model_without_attention_is_refused():
    """It would change nothing; a search that tunes it would spend its budget on noise."""
    def mlp(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4))

    with pytest.raises(hpt.AttentionError, match=r"multipliers\['attn'\]=2 is set but the probe forward found no "
                                                 "attention call"):
        hpt.parametrize(mlp(256), meta(mlp, 64), "mup", multipliers={"attn": 2.0}, example_inputs=torch.randn(2, 16))
    plan = hpt.parametrize(gpt(WIDTH), meta(gpt, BASE), "mup", multipliers={"attn": 2.0}, example_inputs=tokens())
    assert plan.multipliers["attn"] == 2.0  # the control: a model with attention takes it
