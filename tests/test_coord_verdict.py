"""The coordinate-check verdict: its rules on made-up slopes, the two reported false alarms pass, attention
and hidden-LR faults are caught where activations alone miss them, unstable steps are not judged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import hptransfer as hpt
from hptransfer.verify.coord import CoordCheckResult, Slope, Thresholds
from hptransfer.data.synthetic import gaussian_mixture
from hptransfer.verify.faults import WIDTH_FAULTS
from hptransfer.models import PlainGPT, PlainResMLP
from hptransfer.data.text import text_batch
from hptransfer.rules import MUP_TABLE, SCHEMES, Power
from hptransfer.testing import CoordCheckFailed, assert_coord_check

from conftest import tiny_gpt_builder

WIDTHS = [64, 128, 256, 512]
INPUTS, TARGETS, VOCAB = text_batch(4, 32, seed=0)
LR_TWICE = dataclasses.replace(SCHEMES["mup"], name="lr_twice",
                               width={**MUP_TABLE, "hidden": dataclasses.replace(MUP_TABLE["hidden"],
                                                                                 adam_lr=Power(fan_in=-2))})


def gpt_check(scheme, lr: float) -> hpt.CoordCheckResult:
    """The reported false alarm: pre-LN GPT, separate q/k/v/o, SDPA, untied head, base 64, Adam."""
    def build(width: int):
        model = PlainGPT(d_model=width, n_layer=2, n_head=4, vocab_size=VOCAB, block_size=32, fused_qkv=False)
        with torch.device("meta"):
            base = PlainGPT(d_model=64, n_layer=2, n_head=4, vocab_size=VOCAB, block_size=32, fused_qkv=False)
        hpt.parametrize(model, base, scheme, check=isinstance(scheme, str))  # faults: the safety net is off
        return model

    return hpt.coord_check(build, WIDTHS, data=(INPUTS, TARGETS), optimizer="adam", lr=lr, steps=5, seeds=3)


@pytest.mark.slow
def test_reported_false_alarm_gpt_passes_and_sp_fails():
    mup = gpt_check("mup", 1e-2)
    assert mup.verdict == "PASS", mup.summary()
    sp = gpt_check("sp", 1e-2)
    assert sp.verdict == "FAIL" and "grows with width" in sp.likely_causes()[0]


# ---- the rules, on made-up slopes ---------------------------------------------------------------------
def made_up(*slopes: tuple[str, int, str, float], sizes=(64, 128, 256, 512), tokens=4, steps=5,
            rise_at: int | None = None) -> CoordCheckResult:
    """A result with the given (module, step, kind, slope) rows (seed band +-0.05, band +-0.15) and a probe
    loss that falls every step, or rises at ``rise_at`` for the smallest size."""
    result = CoordCheckResult("width", list(sizes), steps, 1, "rms", Thresholds(), tokens=tokens)
    result.slopes = [Slope(m, st, k, v, v - 0.05, v + 0.05, (-0.15, 0.15)) for m, st, k, v in slopes]
    for size in sizes:
        loss = 4.0
        for step in range(steps + 1):
            loss = loss * 1.5 if (step == rise_at and size == sizes[0]) else loss * 0.9
            result.probe_losses.append(dict(seed=0, size=size, step=step, value=loss))
    return result


def test_verdict_rules_on_made_up_slopes():
    flat = ("h", 1, "out", 0.0)
    assert made_up(flat).verdict == "PASS"
    assert made_up(flat, ("h", 2, "own", +0.4)).verdict == "FAIL"  # growth always fails
    assert made_up(flat, ("h", 2, "own", -1.0), tokens=64).verdict == "FAIL"  # steeper than width^-1/2
    mild = made_up(flat, ("h", 2, "own", -0.4), tokens=64)  # 64 < 4 x 64 x 5: token-limited
    assert mild.verdict == "INCONCLUSIVE" and "tokens x steps (64 x 5)" in mild.reason
    assert made_up(flat, ("h", 2, "own", -0.4), tokens=1).verdict == "FAIL"  # 64 > 4 x 1 x 5: not limited
    few = made_up(flat, sizes=(64, 128, 256))
    assert few.verdict == "INCONCLUSIVE" and "too few" in few.reason and few.ok
    assert made_up(flat, ("h", 1, "out", 0.9), sizes=(64, 128, 256, 384)).verdict == "INCONCLUSIVE"  # 6x


def test_steps_after_a_run_turned_unstable_are_not_judged():
    late = made_up(("h", 1, "out", 0.0), ("h", 4, "out", -0.9), rise_at=4)  # rose at step 4: judge 0..3
    assert late.last_judged_step == 3 and late.verdict == "PASS" and late.failures == []
    assert "judged: steps 0..3 only" in late.summary()
    assert made_up(("h", 3, "out", -0.9), rise_at=4).verdict == "FAIL"  # before the rise it counts
    early = made_up(("h", 0, "out", 0.0), ("h", 1, "out", -0.9), rise_at=1)  # only init is left
    assert early.verdict == "INCONCLUSIVE" and "only the initialization" in early.reason


# ---- faults that activations alone miss ---------------------------------------------------------------
def plain_gpt_check(scheme) -> hpt.CoordCheckResult:
    """SDPA called in user code (no scale attribute): the attention is rescaled by a torch-function mode."""
    def build(width: int):
        model = PlainGPT(d_model=width, n_layer=1, n_head=2, vocab_size=VOCAB, block_size=32, fused_qkv=False)
        with torch.device("meta"):
            base = PlainGPT(d_model=32, n_layer=1, n_head=2, vocab_size=VOCAB, block_size=32, fused_qkv=False)
        hpt.parametrize(model, base, scheme, branches=["blocks.*.attn", "blocks.*.mlp"], check=isinstance(scheme, str))
        return model

    return hpt.coord_check(build, [32, 64, 128, 256], data=(INPUTS[:1, :8], TARGETS[:1, :8]), optimizer="adam",
                           lr=1e-3, steps=2, seeds=1)


def test_attention_left_at_inverse_sqrt_d_is_caught_by_its_measured_scale():
    # head dim = width / 2: mu-P's scale ~ 1/d keeps scale x d constant, 1/sqrt(d) makes it grow like d^(1/2)
    fault = plain_gpt_check(WIDTH_FAULTS["adam"]["attention 1/sqrt(d)"][0])
    scale = fault.slope("blocks.0.attn (attn scale x head dim)", 0, "scale")
    assert scale.slope == pytest.approx(0.5, abs=1e-9) and scale.low == scale.high
    assert fault.verdict == "FAIL" and "1/sqrt(d)" in fault.likely_causes()[0], fault.summary()
    correct = plain_gpt_check("mup")
    assert correct.slope("blocks.0.attn (attn scale x head dim)", 0, "scale").slope == pytest.approx(0, abs=1e-9)
    assert correct.ok, correct.summary()


def resmlp_sgd_check(scheme) -> hpt.CoordCheckResult:
    def build(width: int):
        model = PlainResMLP(width, 2)
        with torch.device("meta"):
            base = PlainResMLP(64, 2)
        hpt.parametrize(model, base, scheme, branches="blocks.*.branch", check=isinstance(scheme, str))
        return model

    return hpt.coord_check(build, WIDTHS, data=gaussian_mixture(32, 32, 10, seed=0), optimizer="sgd",
                           lr=0.1, steps=3, seeds=2)


def test_hidden_lr_scaled_twice_under_sgd_is_caught_by_the_layers_own_updates():
    # under SGD the input layer's LR ~ width carries the stream's update whatever the hidden LR is, so the
    # activations stay flat; the hidden layers' own change (W_t - W_0) x then shrinks like width^-1
    fault = resmlp_sgd_check(WIDTH_FAULTS["sgd"]["hidden LR scaled twice"][0])
    assert fault.verdict == "FAIL" and "own updates vanish" in fault.likely_causes()[0], fault.summary()
    assert not any(f.kind in ("out", "update") for f in fault.failures)  # only the own updates show it
    own = [s for s in fault.slopes if s.kind == "own"]
    assert own and all(abs(s.slope + 1) < 0.15 for s in own)
    correct = resmlp_sgd_check("mup")
    assert correct.verdict == "PASS", correct.summary()
    assert all(abs(s.slope) <= 0.15 for s in correct.slopes if s.kind == "own")


@pytest.mark.slow
def test_past_the_stable_lr_only_steps_before_the_rise_are_judged():
    mup = gpt_check("mup", 3e-2)
    assert mup.unstable_runs() and mup.last_judged_step < mup.steps
    assert mup.verdict != "FAIL", mup.summary()
    assert gpt_check("sp", 3e-2).verdict == "FAIL"
    assert gpt_check(LR_TWICE, 3e-2).verdict == "FAIL"


@pytest.mark.slow
def test_reported_false_alarm_hf_llama_with_a_real_base_passes():
    pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")
    from hf_models import llama, token_batches

    base = llama(64)  # a real base: init measured, not read from the family

    def build(width: int):
        model = llama(width)
        hpt.parametrize(model, base, "mup")
        return model

    result = hpt.coord_check(build, WIDTHS, data=token_batches(), lr=3e-3, steps=5, seeds=3)
    assert result.verdict == "PASS", result.summary()


def test_assert_coord_check_raises_with_the_table_and_returns_on_pass():
    x = torch.randint(0, 64, (2, 8))
    result = assert_coord_check(tiny_gpt_builder("mup"), [32, 64, 128, 256], data=(x, x), steps=2, seeds=2)
    assert result.verdict == "PASS"
    with pytest.raises(CoordCheckFailed, match=r"(?s)FAIL.*likely cause:.*\| module \| step"):
        assert_coord_check(tiny_gpt_builder("sp"), [32, 64, 128, 256], data=(x, x), steps=2, seeds=2)
