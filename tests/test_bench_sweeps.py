"""The LR sweeps the transfer benchmarks are built on (bench/sweeps.py), on loss curves with known minima."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from sweeps import basin_sweep, lr_sweep  # noqa: E402


def bowl(center: float, floor: float = 2.0, curvature: float = 0.05, diverge_above: float = math.inf):
    """A loss that is a parabola in log2 LR (so 3-point interpolation is exact), NaN above ``diverge_above``."""
    calls = []

    def run(log2_lr: float, seed: int) -> float:
        calls.append((log2_lr, seed))
        return math.nan if log2_lr > diverge_above else floor + curvature * (log2_lr - center) ** 2
    return run, calls


@pytest.mark.parametrize("start", [-12.0, -6.5, -2.0])
def test_basin_sweep_finds_the_minimum_from_any_start(start):
    run, calls = bowl(-6.3)
    sweep = basin_sweep(run, seeds=[0, 1], start=start)
    assert sweep.optimum == pytest.approx(-6.3, abs=1e-9)
    assert not sweep.at_edge
    xs = sorted(sweep.points)
    assert all(b - a == 0.5 for a, b in zip(xs, xs[1:])), xs  # one contiguous half-octave grid
    ceiling = 1.02 * sweep.best_loss
    assert sweep.points[xs[0]] > ceiling and sweep.points[xs[-1]] > ceiling  # the basin is bracketed
    # no point was spent beyond the bracket on a side the walk grew into from the start
    if start <= sweep.optimum:
        assert sweep.points[xs[-2]] <= ceiling
    if start >= sweep.optimum:
        assert sweep.points[xs[1]] <= ceiling
    assert len(calls) == 2 * len(xs)  # each point trained once per seed


def test_basin_sweep_stops_at_divergence_and_reports_the_edge():
    run, _ = bowl(-4.0, diverge_above=-5.6)
    sweep = basin_sweep(run, seeds=[0], start=-8.0)
    assert math.isnan(sweep.points[-5.5])
    assert max(sweep.points) == -5.5  # nothing tried above the first divergence
    assert sweep.optimum == -6.0 and sweep.at_edge


def test_basin_sweep_walks_down_when_the_start_diverges():
    run, _ = bowl(-11.0, diverge_above=-9.1)
    sweep = basin_sweep(run, seeds=[0], start=-7.0)
    assert sweep.optimum == pytest.approx(-11.0, abs=1e-9)


def test_basin_sweep_respects_its_bounds():
    run, _ = bowl(-20.0)
    sweep = basin_sweep(run, seeds=[0], start=-10.0, bounds=(-12.0, -1.0))
    assert min(sweep.points) == -12.0 and sweep.optimum == -12.0 and sweep.at_edge


def test_grid_sweep_refines_beside_the_minimum():
    run, _ = bowl(-6.3)
    sweep = lr_sweep(run, [float(x) for x in range(-10, -2)], seeds=[0])
    assert {-6.5, -5.5} <= set(sweep.points) and sweep.optimum == pytest.approx(-6.3, abs=1e-9)


def test_seed_optima_show_the_noise_of_the_optimum():
    def run(log2_lr: float, seed: int) -> float:  # the seeds disagree: minima at -7 and -6
        return 2.0 + 0.05 * (log2_lr - (-7.0 if seed == 0 else -6.0)) ** 2
    sweep = basin_sweep(run, seeds=[0, 1], start=-6.5)
    assert sweep.seed_optima() == pytest.approx([-7.0, -6.0], abs=1e-9)
    assert sweep.optimum == pytest.approx(-6.5, abs=1e-9)
    assert sweep.to_dict()["seed_optima"] == sweep.seed_optima()
