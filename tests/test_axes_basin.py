"""The basin estimate of a sweep's optimum (hptransfer.axes.basin) and the fit weighted by its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hptransfer.axes import AxisFitError, basin_optimum, fit_optimum

GRID = np.round(np.arange(-8.0, -4.49, 0.25), 6)


def sweep(vertex: float, noise: float, seed: int, seeds: int = 4, offset: float = 0.1, curvature: float = 0.05):
    """Losses of a parabola in log2 LR with one constant per seed (a harder data order) and per-run noise."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, offset, seeds)
    return [[curvature * (x - vertex) ** 2 + offsets[s] + rng.normal(0, noise) for s in range(seeds)] for x in GRID]


def test_the_vertex_is_recovered_and_its_error_is_calibrated():
    found, errors = [], []
    for seed in range(200):
        basin = basin_optimum(GRID, sweep(-6.3, 0.012, seed))
        found.append(basin.log2)
        errors.append(basin.se)
    found = np.asarray(found)
    spread = float(found.std())
    assert abs(found.mean() + 6.3) < 0.03
    # the reported error matches the scatter over draws: not inflated by the seeds' offsets (0.1, 8x the noise),
    # not too small
    assert 0.67 < float(np.mean(errors)) / spread < 1.5, (np.mean(errors), spread)
    hits = np.mean(np.abs(found + 6.3) <= 1.96 * np.asarray(errors))
    assert 0.88 <= hits <= 1.0


def test_the_seeds_offsets_do_not_become_noise():
    """A control: the same losses with the seeds' offsets scrambled per point (no longer one constant per seed) are
    noisier, and the error must say so."""
    rows = sweep(-6.3, 0.012, seed=1)
    rng = np.random.default_rng(0)
    scrambled = [list(rng.permutation(row)) for row in rows]
    assert basin_optimum(GRID, scrambled).se > 3 * basin_optimum(GRID, rows).se


def test_one_loss_per_value_and_diverged_runs():
    means = [float(np.mean(r)) for r in sweep(-6.0, 0.002, seed=2)]
    basin = basin_optimum(GRID, means)
    assert abs(basin.log2 + 6.0) < 0.1 and not basin.at_edge
    with_divergence = means[:-2] + [math.inf, math.nan]  # the two highest LRs diverged
    assert abs(basin_optimum(GRID, with_divergence).log2 - basin.log2) < 0.05


def test_an_unbracketed_or_flat_sweep_says_so():
    rising = [0.05 * (x + 9.0) ** 2 for x in GRID]  # the optimum lies below the grid
    basin = basin_optimum(GRID, rising)
    assert basin.at_edge and basin.log2 == GRID[0]
    flat = basin_optimum(GRID, [1.0 - 1e-4 * x for x in GRID])  # falls all the way: no bowl
    assert flat.at_edge and flat.se >= 0.25


@pytest.mark.parametrize("values, losses, words", [
    ([-7, -6], [1.0, 1.1], "3 or more values"),
    ([-7, -6, -5], [1.0, 1.1], "3 values but 2 rows"),
    ([-7, -6, -5], [math.inf, math.nan, math.inf], "no value has a finite loss"),
])
def test_the_basin_refuses_what_it_cannot_fit(values, losses, words):
    with pytest.raises(AxisFitError, match=words):
        basin_optimum(values, losses)


def test_the_fit_weighted_by_errors_leans_on_the_precise_points():
    xs = [1, 2, 4, 8]
    truth = [-6 - 0.1 * math.log2(x) for x in xs]
    spoiled = truth[:3] + [truth[3] + 1.5]  # one imprecise point far off the line
    weighted = fit_optimum(xs, [2.0**y for y in spoiled], se=[0.02, 0.02, 0.02, 2.0])
    plain = fit_optimum(xs, [2.0**y for y in spoiled])
    assert abs(weighted.slope + 0.1) < 0.05
    assert abs(plain.slope + 0.1) > 0.3  # the control: unweighted, the bad point drags the slope


def test_the_weighted_fit_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    xs = np.array([1, 2, 4, 8])
    errors = np.array([0.05, 0.05, 0.08, 0.1])
    hits, widths = 0, []
    for _ in range(300):
        ys = -6 - 0.1 * np.log2(xs) + rng.normal(0, errors)
        low, high = fit_optimum(xs, 2.0**ys, se=errors).slope_interval
        hits += low <= -0.1 <= high
        widths.append(high - low)
    assert 0.9 <= hits / 300 <= 1.0
    assert float(np.median(widths)) < 0.3  # far narrower than the quarter-octave floor of the unweighted fit


def test_bad_errors_are_refused():
    with pytest.raises(AxisFitError, match="one positive standard error"):
        fit_optimum([1, 2, 4], [1e-3, 1e-3, 1e-3], se=[0.1, 0.0, 0.1])
    with pytest.raises(AxisFitError, match="one positive standard error"):
        fit_optimum([1, 2, 4], [1e-3, 1e-3, 1e-3], se=[0.1, 0.1])
