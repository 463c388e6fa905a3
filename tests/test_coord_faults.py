"""One rule broken at a time on transformers models: every fault fails the width check, naming the rule."""

from __future__ import annotations

import dataclasses

import pytest

import hptransfer as hpt
from hptransfer.rules import MUP_TABLE, ONE, SCHEMES, Power

from hf_models import FAMILIES, meta, token_batches

MUP = SCHEMES["mup"]


def broken(name: str, width_attention: bool = True, **roles: dict) -> hpt.rules.Scheme:
    table = dict(MUP_TABLE)
    for role, change in roles.items():
        table[role] = dataclasses.replace(table[role], **change)
    return dataclasses.replace(MUP, name=name, width=table, width_attention=width_attention)


FAULTS = {
    "no readout multiplier": (broken("f_readout", output=dict(multiplier=ONE)), "readout's 1/m_N multiplier"),
    "no hidden LR scaling": (broken("f_lr", hidden=dict(adam_lr=ONE)), "hidden weights are not in mu-P"),
    "hidden LR scaled twice": (broken("f_lr2", hidden=dict(adam_lr=Power(fan_in=-2))), "scaled too much"),
    "no init rescale": (broken("f_init", hidden=dict(init_std=ONE)), "hidden weights are not in mu-P"),
    "attention left at 1/sqrt(d)": (broken("f_attn", width_attention=False), "keep 1/sqrt(d)"),
}


def check(family: str, scheme) -> hpt.CoordCheckResult:
    base = meta(FAMILIES[family], 64)

    def build(width: int):
        model = FAMILIES[family](width)
        hpt.parametrize(model, base, scheme)
        return model

    return hpt.coord_check(build, [64, 128, 256, 512], data=token_batches(), lr=1e-3, steps=5, seeds=3)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_fails_and_the_explanation_names_it(family, fault):
    scheme, named = FAULTS[fault]
    result = check(family, scheme)
    assert not result.ok, f"{fault} passed:\n{result.summary()}"
    assert named in result.likely_causes()[0], result.likely_causes()
    assert "likely cause: " in result.summary()


@pytest.mark.slow
def test_the_correct_scheme_passes_with_no_causes():
    result = check("llama", MUP)
    assert result.ok and result.likely_causes() == []
    assert any(s.module.endswith("(attn logits)") for s in result.slopes)  # HF attention logits are recorded
