"""The measured safety net (hptransfer.check): the parametrized model at init against its base."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

import hptransfer as hpt

from conftest import meta
from zoo import SdpaLM, seq2seq, tokens

transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")


def rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


def test_a_width_dependent_constant_in_the_forward_is_refused_with_where_and_how_much():
    """Research code multiplies its embeddings by sqrt(d_model): at 4x the width the first block's input is 2x the
    base's (width exponent +1/2). Refused, naming the block, the ratio and the exponent; nothing stays installed."""
    model = SdpaLM(128, 1, embed_scale=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(hpt.CheckError, match=r"blocks\.0: input rms x(1\.9\d*|2|2\.0\d*) the base's, width exponent "
                                             r"\+0\.(49|5).*constant in the forward"):
        hpt.parametrize(model, meta(SdpaLM, 32, 1, embed_scale=True), "mup", example_inputs=tokens())
    assert hpt.get_plan(model) is None
    assert all(torch.allclose(before[n], p, rtol=1e-6) for n, p in model.named_parameters())
    # the negative control: the same model without the constant passes, and the plan says so
    plan = hpt.parametrize(SdpaLM(128, 1), meta(SdpaLM, 32, 1), "mup", example_inputs=tokens())
    assert plan.check["ran"] and not plan.check["deviations"] and "as mu-P predicts" in plan.check["summary"]
    # and check=False accepts the model as it is, saying so
    plan = hpt.parametrize(SdpaLM(128, 1, embed_scale=True), meta(SdpaLM, 32, 1, embed_scale=True), "mup",
                           example_inputs=tokens(), check=False)
    assert "skipped" in plan.check["summary"]


def gemma(width: int) -> nn.Module:
    config = transformers.GemmaConfig(vocab_size=96, hidden_size=width, intermediate_size=2 * width,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=width // 4, attn_implementation="sdpa")
    return transformers.GemmaForCausalLM(config)


def test_gemmas_embedding_normalizer_is_kept_at_the_base_value():
    """Gemma multiplies its embeddings by sqrt(hidden): the adapter sets the normalizer to sqrt(base hidden), so the
    embeddings' output has the base's rms at every width (it grew 2x at 4x the width)."""
    torch.manual_seed(0)
    model, base = gemma(128), gemma(32)
    plan = hpt.parametrize(model, meta(gemma, 32), "mup")
    constant = next(m for m in plan.modules if m.kind == "constant" and m.attribute == "embed_scale")
    assert constant.value == pytest.approx(math.sqrt(32)) and constant.factor == pytest.approx(0.5)
    assert float(model.model.embed_tokens.embed_scale) == pytest.approx(math.sqrt(32))
    ids = tokens()
    with torch.no_grad():
        assert rms(model.model.embed_tokens(ids)) == pytest.approx(rms(base.model.embed_tokens(ids)), rel=0.1)
    hpt.unparametrize(model)
    assert float(model.model.embed_tokens.embed_scale) == pytest.approx(math.sqrt(128))


def t5(width: int) -> nn.Module:
    config = transformers.T5Config(vocab_size=96, d_model=width, d_ff=2 * width, d_kv=width // 4, num_heads=4,
                                   num_layers=1, dropout_rate=0.0)
    return transformers.T5ForConditionalGeneration(config)


def test_an_encoder_decoder_is_probed_with_decoder_inputs():
    """T5 takes decoder inputs too: the adapter's probe passes them (it used to pass input_ids alone, and T5
    failed inside parametrize with transformers' own error), so its attention and the check are measured."""
    torch.manual_seed(0)
    model = t5(128)
    plan = hpt.parametrize(model, meta(t5, 32), "mup")
    assert plan.check["ran"] and not plan.check["deviations"] and plan.check["attention_calls"] == 3
    scales = {m.name: m.factor for m in plan.modules if m.kind == "attention"}
    assert len(scales) == 3 and all(f == pytest.approx(32 / 128) for f in scales.values())  # T5's scale 1 -> d0/d
    with torch.no_grad():
        assert torch.isfinite(model(**seq2seq()).logits).all()


def test_t5s_head_constant_is_kept_at_the_base_value():
    """T5 multiplies the decoder's output by d_model^-1/2 before its tied head: on top of the readout's 1/m that
    made the head's input 2x smaller than the base's at 4x the width. The adapter keeps the constant at the
    base's d_model."""
    torch.manual_seed(0)
    model = t5(128)
    plan = hpt.parametrize(model, t5(32), "mup", example_inputs=seq2seq())
    assert model.model_dim == 32
    assert any(m.kind == "constant" and m.attribute == "model_dim" for m in plan.modules)
    readout_inputs = [d for d in plan.check["deviations"] if d["kind"] == "readout input"]
    assert plan.check["ran"] and not readout_inputs


def test_a_table_without_a_width_dim_keeps_the_bases_init():
    """T5's relative position bias is a (buckets, heads) table, with no width dim, that T5 draws with std
    d_model^-1/2: at 4x the width it was left at half the base's std. A parameter without a width dim keeps the
    base's init."""
    torch.manual_seed(0)
    model = t5(128)
    plan = hpt.parametrize(model, t5(32), "mup", example_inputs=seq2seq())
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert plan.record(next(n for n, p in model.named_parameters() if p is bias)).role == "scalar"
    assert float(bias.std()) == pytest.approx(32**-0.5, rel=0.2)  # the base's; the model's own was 128^-1/2


def test_an_install_that_misses_a_rule_is_caught(monkeypatch):
    """Negative control: with the init left unrescaled (a broken install), the hidden activations of a 4x wider
    model are 2x the base's: refused."""
    init = importlib.import_module("hptransfer.install.init")
    monkeypatch.setattr(init, "record_base_stds", lambda root, plan: None)
    stages = importlib.import_module("hptransfer.parametrize")
    monkeypatch.setattr(stages, "initialize", lambda *args, **kwargs: {})

    class Net(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.inp, self.hidden, self.out = nn.Linear(8, width), nn.Linear(width, width), nn.Linear(width, 3)
            for layer in (self.inp, self.hidden, self.out):
                nn.init.normal_(layer.weight, std=0.5)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(torch.relu(self.inp(x)))))

    with pytest.raises(hpt.CheckError, match=r"hidden: output rms x(1\.[89]\d*|2|2\.[01]\d*) the base's, width "
                                             r"exponent \+0\.(4|5)"):
        hpt.parametrize(Net(128), Net(32), "mup", example_inputs=torch.randn(64, 8))


def test_a_net_that_cannot_run_says_why_in_the_plan_and_the_log(caplog):
    """A meta base loses the buffers its constructor computed (a rotary table of its head dim): its draws cannot
    be rebuilt, so the net does not run, and the plan and a warning say which buffer and what to pass."""

    class Rotary(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.inp, self.out = nn.Linear(8, width), nn.Linear(width, 3)
            self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, width, 2) / width))

        def forward(self, x):
            h = self.inp(x)
            return self.out(h * torch.cos(self.inv_freq).repeat_interleave(2))

    with caplog.at_level("WARNING", logger="hptransfer.parametrize"):
        plan = hpt.parametrize(Rotary(64), meta(Rotary, 16), "mup", example_inputs=torch.randn(4, 8))
    assert not plan.check["ran"] and "buffer 'inv_freq'" in plan.check["summary"]
    assert "pass a real base" in plan.check["summary"] and "did not run" in caplog.text
    # with a real base it runs
    plan = hpt.parametrize(Rotary(64), Rotary(16), "mup", example_inputs=torch.randn(4, 8))
    assert plan.check["ran"]


@pytest.mark.parametrize("real_base", [False, True])
def test_an_init_sigma_is_predicted_from_a_base_drawn_with_the_same_sigma(real_base):
    """init=sigma redraws the model at sigma x the rule's factor; the net's base must be drawn at sigma too (it
    was compared with the base's own init, and refused a correct model at x0.007)."""
    base = SdpaLM(32, 1) if real_base else meta(SdpaLM, 32, 1)
    plan = hpt.parametrize(SdpaLM(128, 1), base, "mup", init=0.05, example_inputs=tokens())
    assert plan.check["ran"] and not plan.check["deviations"], plan.check["summary"]
    # the control: the same model, its weights shrunk 100x after parametrize, is refused by the same net
    model = SdpaLM(128, 1)
    hpt.parametrize(model, SdpaLM(32, 1) if real_base else meta(SdpaLM, 32, 1), "mup", init=0.05, check=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.01)
    with pytest.raises(hpt.CheckError):
        from hptransfer.parametrize import _check, STATE_ATTR

        ctx = getattr(model, STATE_ATTR)
        ctx.check = True
        _check(model, hpt.get_plan(model), ctx, (tokens(),), {}, [])
