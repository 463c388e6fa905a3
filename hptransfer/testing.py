"""Helpers for users' own test suites: gate CI on a coordinate-check verdict with one assertion."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from .verify.coord import CoordCheckResult, coord_check


class CoordCheckFailed(AssertionError):
    """A coordinate check that did not PASS; the message holds the summary table and the likely causes."""

    def __init__(self, result: CoordCheckResult) -> None:
        super().__init__(f"coordinate check {result.verdict}\n{result.summary(worst=12)}")
        self.result = result


def assert_coord_check(build: Callable[[int], nn.Module], sizes: Sequence[int], *,
                       allow_inconclusive: bool = False, **kwargs: Any) -> CoordCheckResult:
    """Run ``hptransfer.coord_check(build, sizes, **kwargs)`` and raise CoordCheckFailed unless it passes.

    Args:
        build, sizes, kwargs: as coord_check (``data=`` is required there).
        allow_inconclusive: return instead of raising on INCONCLUSIVE (an LR past the smaller models' stable range).

    Returns:
        The result, for further assertions.
    """
    result = coord_check(build, sizes, **kwargs)
    if result.verdict == "PASS" or (allow_inconclusive and result.verdict == "INCONCLUSIVE"):
        return result
    raise CoordCheckFailed(result)
