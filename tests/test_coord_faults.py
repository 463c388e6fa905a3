"""One rule broken at a time on transformers models: every fault fails the width check, naming the rule."""

from __future__ import annotations

import pytest

import hptransfer as hpt
from hptransfer.verify.faults import MUP, WIDTH_FAULTS

from hf_models import FAMILIES, meta, token_batches

FAULTS = {name: fault for name, fault in WIDTH_FAULTS["adam"].items() if name != "sp"}


def check(family: str, scheme) -> hpt.CoordCheckResult:
    base = meta(FAMILIES[family], 64)

    def build(width: int):
        model = FAMILIES[family](width)
        hpt.parametrize(model, base, scheme, check=isinstance(scheme, str))  # faults: the safety net is off
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
