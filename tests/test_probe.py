"""What the probe forward measures (hptransfer.probe) and the roles read from it (hptransfer.structure.roles)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hptransfer as hpt
from hptransfer.models import VisionTransformer
from hptransfer.probe import LayoutRecorder, run_probe

from conftest import meta
from zoo import RawLM, StackedExperts, tokens

IMAGES = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def adam_lrs(model: nn.Module) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in hpt.param_groups(model, lr=1.0) for p in g["params"]}


def test_layout_recorder_finds_which_dim_each_use_contracts():
    model = RawLM(64, 1)
    layout = LayoutRecorder(model)
    run_probe(model, lambda: model(tokens()), [layout])
    # x @ W with W (d_in, d_out): dim 0 is contracted; a lookup's rows are its "fan-in"; nn.Linear (out, in)
    assert layout.uses["blocks.0.attn.w_qkv"][0].fan_in == 0 and layout.uses["blocks.0.attn.w_qkv"][0].fan_out == 1
    assert (layout.uses["embed"][0].kind, layout.uses["embed"][0].fan_in) == ("lookup", 0)
    assert layout.uses["head.weight"][0].fan_in == 1
    assert layout.uses["blocks.0.norm1.weight"][0].kind == "elementwise"
    experts = StackedExperts(32)
    layout = LayoutRecorder(experts)
    run_probe(experts, lambda: experts(torch.randn(2, 3, 32)), [layout])
    use = layout.uses["w_in"][0]  # (E, d_in, d_out) by einsum "btd,edh->bteh"
    assert (use.fan_in, use.fan_out, use.stacked) == (1, 2, (0,))


def test_transposed_raw_weights_get_their_roles_from_their_use():
    """A research model keeps W as (d_in, d_out) and writes x @ W: read as nn.Linear's (out, in), its first layer
    would look like a readout. Measured, every matrix is hidden with fan-in m, and the plan is mu-P's."""
    model = RawLM(128, 2)
    plan = hpt.parametrize(model, RawLM(32, 2), "mup", example_inputs=tokens())
    assert {plan.record(n).role for n in ("blocks.0.attn.w_qkv", "blocks.0.w_up", "blocks.0.w_down")} == {"hidden"}
    assert all(plan.record(n).measured for n in ("blocks.0.attn.w_qkv", "blocks.0.w_down"))
    lrs = adam_lrs(model)
    assert lrs["blocks.1.w_up"] == pytest.approx(0.25) and lrs["embed"] == pytest.approx(1.0)
    assert [m.name for m in plan.modules if m.kind == "readout"] == ["head"]


def opt(width: int) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.OPTConfig(vocab_size=96, hidden_size=width, ffn_dim=2 * width, num_hidden_layers=1,
                                    num_attention_heads=4, word_embed_proj_dim=width, max_position_embeddings=64)
    return transformers.OPTForCausalLM(config)


def test_embedding_subclasses_are_embeddings():
    """OPT's learned positions are an nn.Embedding subclass: compared by class name they were read as
    Linear's (out, in) and reported as a second readout. By isinstance (and measured as a lookup) they are an
    input layer, and naming one as the readout is refused with what is wrong, not a dtype error."""
    model = opt(128)
    plan = hpt.parametrize(model, meta(opt, 32), "mup")
    rec = plan.record("model.decoder.embed_positions.weight")
    assert rec.role == "input" and rec.fan_out_mult == 4 and rec.lr["adam"] == 1.0
    assert [m.name for m in plan.modules if m.kind == "readout"] == ["lm_head"]
    with pytest.raises(hpt.ReadoutError, match=r"'model\.decoder\.embed_positions' does not map a width dim to a "
                                               r"fixed one .* are token ids"):
        hpt.parametrize(opt(128), meta(opt, 32), "mup", readout=["lm_head", "model.decoder.embed_positions"])


def test_class_token_and_position_embeddings_are_vectors():
    """timm's (1, 1, D) class token and (1, N, D) position embedding have width only in their last dim and no
    product: mup treats them as vectors, and so does hptransfer (init and Adam LR unchanged)."""
    torch.manual_seed(0)
    model = VisionTransformer(dim=128, depth=1)
    before = {n: float(p.std()) for n, p in model.named_parameters() if n in ("cls_token", "pos_embed")}
    plan = hpt.parametrize(model, meta(VisionTransformer, dim=32, depth=1), "mup", example_inputs=IMAGES)
    for name in ("cls_token", "pos_embed"):
        rec = plan.record(name)
        assert rec.role == "vector" and rec.lr["adam"] == 1.0 and rec.init_std == 1.0
        assert float(dict(model.named_parameters())[name].std()) == pytest.approx(before[name], rel=1e-6)


def mixtral(width: int) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.MixtralConfig(vocab_size=96, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=width // 4, num_local_experts=4, attn_implementation="sdpa")
    return transformers.MixtralForCausalLM(config)


def test_fused_experts_are_hidden_matrices_per_expert_and_the_router_a_readout():
    """transformers' Mixtral stacks its experts as (E, 2I, D) and (E, D, I) Parameters: each expert's slice is a
    hidden matrix (measured in its grouped product), E stays fixed; the router maps width to the number of
    experts, an output layer (mu-P's 1/m on its input)."""
    model = mixtral(128)
    plan = hpt.parametrize(model, meta(mixtral, 32), "mup")
    for name in ("model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"):
        rec = plan.record(name)
        assert rec.role == "hidden" and rec.fan_in_mult == 4 and rec.stacked_dims == (0,) and rec.measured
        assert rec.lr["adam"] == pytest.approx(0.25)
    readouts = {m.name: m.factor for m in plan.modules if m.kind == "readout"}
    assert readouts == {"model.layers.0.mlp.gate": pytest.approx(0.25), "lm_head": pytest.approx(0.25)}
    assert plan.record("model.layers.0.mlp.gate.weight").role == "output"
    assert float(model.model.layers[0].mlp.experts.gate_up_proj.std()) == pytest.approx(0.02 / 2, rel=0.05)


def test_a_readout_written_inside_a_parent_forward_is_refused():
    """``x @ self.wte.weight.T`` in the root's forward uses the embedding as a readout where no module's input
    can carry the 1/m multiplier: refused, with the fix."""
    from zoo import SdpaLM

    with pytest.raises(hpt.ReadoutError, match=r"wte\.weight is used as a readout .* the root module's own forward.*"
                                               r"nn\.Linear whose weight is tied"):
        hpt.parametrize(SdpaLM(64, 1, tied=True), meta(SdpaLM, 32, 1, tied=True), "mup", example_inputs=tokens())


def test_without_example_inputs_the_first_forward_measures_and_refuses_a_wrong_guess():
    """With no probe inputs the plan reads layouts from module classes; a raw (d_in, d_out) weight used as x @ W
    is then guessed (out, in). The first forward measures its use and refuses the model, naming the weight."""

    class Raw(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.w_in = nn.Parameter(torch.randn(8, width) / math.sqrt(8))  # (d_in, d_out), used as x @ W
            self.out = nn.Linear(width, 3)

        def forward(self, x):
            return self.out(x @ self.w_in)

    model = Raw(64)
    hpt.parametrize(model, Raw(16), "mup")
    with pytest.raises(hpt.BaseShapeError, match=r"w_in \(assumed output, measured input\).*example_inputs="):
        model(torch.randn(4, 8))
    fixed = Raw(64)
    plan = hpt.parametrize(fixed, Raw(16), "mup", example_inputs=torch.randn(4, 8))
    assert plan.record("w_in").role == "input"
