"""The model zoo (tests/zoo.py): every variant is parametrized as a user would and is either right, measured
against a real base at run time (tests/zoo_measure.py, tests/zoo_run.py), or refused with an HptError naming
the true cause."""

from __future__ import annotations

import re

import pytest

from zoo import ZOO, Variant
from zoo_run import evaluate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ZOO, ids=[v.name for v in ZOO])
def test_zoo_member_is_right_or_refused_with_its_cause(variant: Variant):
    needs = {"transformers": "transformers", "x-transformers": "x_transformers"}.get(variant.source)
    if needs:
        pytest.importorskip(needs, reason=f"{variant.source} is not installed (pip install -e '.[dev]')")
    outcome = evaluate(variant)
    if variant.refused is not None:
        error, pattern = variant.refused
        assert outcome.refused is not None, f"accepted: {outcome.check}"
        assert outcome.refused.startswith(error.__name__ + ":") and re.search(pattern, outcome.refused), \
            outcome.refused
        assert outcome.unchanged  # nothing installed, weights as they came
        return
    assert outcome.refused is None, outcome.refused
    assert not outcome.problems, "\n".join(outcome.problems)
    assert outcome.check is not None and (outcome.check.get("ran", False) or variant.depth != variant.base_depth), \
        outcome.check
