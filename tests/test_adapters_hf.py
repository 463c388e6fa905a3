"""transformers families through their adapters: attention scale actually applied, init, structure, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

import hptransfer as hpt
from hptransfer.adapters import find_adapter

from hf_models import FAMILIES, MeasureLogitScale, VOCAB, bert, llama, meta

BASE = 64
HEADS = 4


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_adapter_is_chosen_by_class_and_finds_the_structure(family):
    model = FAMILIES[family](128)
    plan = hpt.parametrize(model, meta(FAMILIES[family], BASE), "mup")
    assert plan.adapter == f"transformers:{family}"
    kinds = {}
    for rec in plan.modules:
        kinds.setdefault(rec.kind, []).append(rec.name)
    assert kinds["readout"] == ["lm_head"]
    assert len(kinds["branch"]) == 4  # attention and MLP of 2 layers, found without branches=
    assert len([n for n in kinds["attention"] if n]) == 2
    assert plan.base_head_dim == BASE // HEADS  # from the base model, no base_head_dim=


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_applied_attention_scale_is_sqrt_base_head_dim_over_head_dim(family, impl):
    width = 256
    torch.manual_seed(0)
    model = FAMILIES[family](width, impl="eager")
    hpt.parametrize(model, meta(FAMILIES[family], BASE), "mup")
    x = torch.randint(0, VOCAB, (2, 12))
    measure = MeasureLogitScale()
    with torch.no_grad(), measure:
        model(x)
    head_dim, base_head_dim = width // HEADS, BASE // HEADS
    assert len(measure.scales) == 2
    for scale in measure.scales:
        assert scale == pytest.approx(math.sqrt(base_head_dim) / head_dim, rel=1e-4)
        assert abs(scale - head_dim**-0.5) > 0.1 * head_dim**-0.5  # negative control: not SP's 1/sqrt(d)
    if impl == "sdpa":  # the same weights under sdpa give the same logits
        torch.manual_seed(0)
        other = FAMILIES[family](width, impl="sdpa")
        hpt.parametrize(other, meta(FAMILIES[family], BASE), "mup")
        with torch.no_grad():
            a, b = model(x).logits, other(x).logits
        assert float((a - b).norm() / b.norm()) < 1e-5


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sp_leaves_attention_at_one_over_sqrt_d(family):
    model = FAMILIES[family](256, impl="eager")
    hpt.parametrize(model, meta(FAMILIES[family], BASE), "sp")
    measure = MeasureLogitScale()
    with torch.no_grad(), measure:
        model(torch.randint(0, VOCAB, (1, 8)))
    assert measure.scales and all(s == pytest.approx(64**-0.5, rel=1e-4) for s in measure.scales)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("width", [128, 512, 2048])
def test_init_follows_initializer_range_with_a_meta_base(family, width):
    torch.manual_seed(0)
    model = FAMILIES[family](width, layers=1)
    plan = hpt.parametrize(model, meta(FAMILIES[family], BASE, layers=1), "mup")
    m_n = width / BASE
    checked = 0
    for name, param in model.named_parameters():
        rec = plan.record(name)
        if rec.role != "hidden":
            continue
        # the family's base-width std: 0.02, and GPT-2's c_proj 0.02 / sqrt(2 n_layer)
        base_std = 0.02 / math.sqrt(2) if (family == "gpt2" and name.endswith("c_proj.weight")) else 0.02
        fan_in_mult = rec.fan_in_mult
        assert float(param.detach().std()) == pytest.approx(base_std / math.sqrt(fan_in_mult), rel=0.10), name
        assert abs(fan_in_mult - m_n) / m_n < 0.2
        assert "initializer_range" in rec.init_source
        checked += 1
    assert checked >= 4
    assert "initializer_range" in plan.table()


def test_loaded_weights_with_rescale_are_refused_and_keep_works(tmp_path):
    model = llama(128)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # stands for trained weights: not the family's fresh init
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    before = {n: p.detach().clone() for n, p in loaded.named_parameters()}
    with pytest.raises(hpt.InitError, match="init='keep'"):
        hpt.parametrize(loaded, meta(llama, BASE), "mup")
    assert hpt.get_plan(loaded) is None  # refused: nothing installed, nothing changed
    assert all(torch.equal(before[n], p) for n, p in loaded.named_parameters())
    plan = hpt.parametrize(loaded, meta(llama, BASE), "mup", init="keep")
    assert all(torch.equal(before[n], p) for n, p in loaded.named_parameters())
    optimizer = torch.optim.AdamW(hpt.param_groups(loaded, lr=1e-3))
    x = torch.randint(0, VOCAB, (2, 8))
    loss = loaded(x, labels=x).loss
    loss.backward()
    optimizer.step()
    assert plan.width_mult == 2 and math.isfinite(float(loss.detach()))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_at_base_shape_training_is_bit_for_bit_the_plain_model(family):
    x = torch.randint(0, VOCAB, (2, 16))
    losses = {}
    for wrapped in (False, True):
        torch.manual_seed(0)
        model = FAMILIES[family](BASE)
        if wrapped:
            hpt.parametrize(model, meta(FAMILIES[family], BASE), "mup")
            groups = hpt.param_groups(model, lr=1e-3, optimizer="adamw")
        else:
            groups = [{"params": list(model.parameters()), "lr": 1e-3, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups)
        trace = []
        for _ in range(3):
            loss = model(x, labels=x).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trace.append(loss.detach())
        losses[wrapped] = torch.stack(trace)
    assert torch.equal(losses[False], losses[True])


def test_bert_adapter_width_and_refuses_depth_schemes():
    model = bert(128, impl="eager")
    plan = hpt.parametrize(model, meta(bert, BASE), "mup")
    assert plan.adapter == "transformers:bert"
    assert [m.name for m in plan.modules if m.kind == "readout"] == ["cls.predictions.decoder"]
    measure = MeasureLogitScale()
    with torch.no_grad(), measure:
        model(torch.randint(0, VOCAB, (1, 8)))
    assert measure.scales and all(s == pytest.approx(math.sqrt(16) / 32, rel=1e-4) for s in measure.scales)
    with pytest.raises(hpt.BranchError, match="post-LN"):
        hpt.parametrize(bert(64, layers=4), meta(bert, BASE, layers=2), "completep")


def test_adapter_can_be_named_or_disabled():
    model = llama(128)
    assert find_adapter(model, "transformers:llama").name == "transformers:llama"
    with pytest.raises(hpt.AdapterError, match="does not fit"):
        find_adapter(model, "transformers:gpt2")
    with pytest.raises(hpt.AdapterError, match="unknown adapter"):
        find_adapter(model, "nope")
    # without the adapter the constant 0.02 init is still found, from the weights themselves (Llama's shapes
    # rule out every width law), and SDPA is reached by interception with the head dim read off the meta base
    bare = llama(256, layers=1)
    plan = hpt.parametrize(bare, meta(llama, BASE, layers=1), "mup", adapter=None)
    assert plan.adapter is None and plan.base_head_dim is None
    bare(torch.randint(0, VOCAB, (1, 8)))  # no adapter to make example inputs: checked on the first forward
    assert plan.base_head_dim == BASE // HEADS
    q = bare.model.layers[0].self_attn.q_proj.weight
    assert float(q.detach().std()) == pytest.approx(0.02 / 2, rel=0.1)
    assert "law 'constant'" in plan.record("model.layers.0.self_attn.q_proj.weight").init_source


def test_a_broken_attention_stage_is_refused_not_installed(monkeypatch):
    """Negative controls: if the scale attribute were not found, eager attention could not be reached and is
    refused; if the install forgot the scales it decided, the safety net measures the difference and refuses."""
    import importlib

    multipliers = importlib.import_module("hptransfer.install.multipliers")
    stages = importlib.import_module("hptransfer.parametrize")  # the module (the package exports the function)

    with monkeypatch.context() as patch:
        patch.setattr(stages, "find_scale_sites", lambda *args, **kwargs: ({}, []))
        with pytest.raises(hpt.AttentionError, match="hand-written"):
            hpt.parametrize(llama(256, impl="eager"), meta(llama, BASE), "mup")
    with monkeypatch.context() as patch:
        patch.setattr(multipliers, "add_attention", lambda root, records: None)
        model = llama(256, impl="eager")
        with pytest.raises(hpt.CheckError, match="attention logit scale x2 the base's"):
            hpt.parametrize(model, meta(llama, BASE), "mup")
        assert hpt.get_plan(model) is None


@pytest.mark.parametrize("name", ["Qwen2", "Qwen3", "Mistral"])
def test_the_rest_of_the_llama_family(name):
    import transformers

    def build(width: int):
        config = getattr(transformers, f"{name}Config")(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=HEADS,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, attn_implementation="eager",
            head_dim=width // HEADS)
        return getattr(transformers, f"{name}ForCausalLM")(config)

    model = build(256)
    plan = hpt.parametrize(model, meta(build, BASE), "mup")
    assert plan.adapter == "transformers:llama" and plan.n_branches == 4
    measure = MeasureLogitScale()
    with torch.no_grad(), measure:
        model(torch.randint(0, VOCAB, (1, 8)))
    assert len(measure.scales) == 2 and all(s == pytest.approx(math.sqrt(16) / 64, rel=1e-4) for s in measure.scales)
    q = model.model.layers[0].self_attn.q_proj.weight
    assert float(q.detach().std()) == pytest.approx(0.02 / 2, rel=0.1)
