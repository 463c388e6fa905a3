"""Attention anywhere: SDPA and flex rescaled, hand-written attention found and refused, or reached by attribute."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hptransfer as hpt
from hptransfer.attention import probe_attention
from hptransfer.models import PlainGPT

from conftest import meta

BASE, WIDTH, HEADS = 64, 256, 4
WANT = math.sqrt(BASE // HEADS) / (WIDTH // HEADS)  # mu-P: sqrt(d0) / d


def gpt(width: int, **kwargs) -> PlainGPT:
    return PlainGPT(d_model=width, n_layer=2, n_head=HEADS, vocab_size=96, block_size=32, **kwargs)


def tokens() -> torch.Tensor:
    return torch.randint(0, 96, (2, 16))


def test_handwritten_attention_is_refused_on_first_forward_naming_attention():
    model = gpt(WIDTH, eager_attention=True)
    hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup")
    with pytest.raises(hpt.AttentionError, match=r"blocks\.0\.attn.*hand-written.*attention=\{"):
        model(tokens())


def test_handwritten_attention_is_refused_at_parametrize_with_example_inputs_and_model_left_as_it_was():
    model = gpt(WIDTH, eager_attention=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(hpt.AttentionError, match="hand-written"):
        hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup", example_inputs=tokens())
    assert hpt.get_plan(model) is None
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert model.blocks[0].attn.scale == (WIDTH // HEADS) ** -0.5


def test_handwritten_attention_reached_through_its_attribute():
    model = gpt(WIDTH, eager_attention=True)
    plan = hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup",
                           attention={"blocks.*.attn": "scale"})
    model(tokens())  # the first forward also runs the attention check
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
    hpt.parametrize(model, hpt.shapes.shapes_of(meta(gpt, BASE)), "mup")
    with pytest.raises(hpt.AttentionError, match="base_head_dim"):
        model(tokens())
    fixed = gpt(WIDTH)
    hpt.parametrize(fixed, hpt.shapes.shapes_of(meta(gpt, BASE)), "mup", base_head_dim=BASE // HEADS)
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
        return self.out(flex_attention(q, k, v, scale=self.scale).transpose(1, 2).reshape(batch, seq, width))


class FlexModel(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.attn = FlexAttention(width, HEADS)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.inp(x)))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_is_found_and_refused_then_reached_through_its_scale_attribute():
    x = torch.randn(2, 16, 8)
    with pytest.raises(hpt.AttentionError, match=r"'attn' is flex_attention.*scale=self.scale"):
        hpt.parametrize(FlexModel(WIDTH), meta(FlexModel, BASE), "mup", example_inputs=x)
    torch.manual_seed(0)
    model = FlexModel(WIDTH)
    hpt.parametrize(model, meta(FlexModel, BASE), "mup", example_inputs=x, attention={"attn": "scale"})
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
    with pytest.raises(hpt.AttentionError, match="no float attribute"):
        hpt.parametrize(model, meta(gpt, BASE, eager_attention=True), "mup", attention={"blocks.*.attn": "nope"})


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
