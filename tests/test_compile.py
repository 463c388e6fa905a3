"""torch.compile: hptransfer's hooks and attention mode cause no graph breaks and change no numbers."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

import hptransfer as hpt
from hptransfer.models import GPT, PlainGPT

from conftest import meta


def plain():
    model = PlainGPT(d_model=64, n_layer=4)
    hpt.parametrize(model, meta(PlainGPT, 32, 2), "completep", branches=["blocks.*.attn", "blocks.*.mlp"],
                    base_head_dim=8, multipliers={"input": 2.0, "attn": 1.5})
    return model


def native():
    model = GPT(d_model=64, n_layer=4, tie_embeddings=True)
    hpt.parametrize(model, meta(GPT, 32, 2, tie_embeddings=True), "completep")
    return model


@pytest.mark.parametrize("build", [plain, native], ids=["plain_hooks", "native_layers"])
def test_no_graph_breaks_and_same_outputs(build):
    dynamo.reset()
    model = build()
    x = torch.randint(0, 96, (2, 16))
    # the forward multipliers are really installed (else this proves nothing)
    assert any(m.kind == "branch" and m.factor == 0.5 for m in hpt.get_plan(model).modules)
    explanation = dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    eager = model(x)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(x), eager, atol=1e-5)
    # and a training step through the compiled model with groups from the compiled wrapper
    opt = torch.optim.AdamW(hpt.param_groups(compiled, lr=1e-3))
    compiled(x).float().pow(2).mean().backward()
    opt.step()


def test_attention_mode_is_really_applied_under_compile():
    """Negative control: the compiled model differs from the same weights without the attention factor."""
    dynamo.reset()
    model = plain()
    x = torch.randint(0, 96, (2, 16))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with_mode = compiled(x)
    twin = PlainGPT(d_model=64, n_layer=4)
    hpt.parametrize(twin, meta(PlainGPT, 32, 2), "completep", branches=["blocks.*.attn", "blocks.*.mlp"],
                    multipliers={"input": 2.0}, init="keep")
    twin.load_state_dict(model.state_dict())
    assert not torch.allclose(twin(x), with_mode, atol=1e-4)
