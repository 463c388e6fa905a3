"""Scaling-law fits recover known parameters from noisy synthetic data; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from hptransfer.scaling.fit import (ChinchillaFit, FewSizesWarning, ScalingFitError, drop_early, fit_chinchilla,
                                fit_power_law, width_limit)

# Hoffmann et al. (2022)'s published fit, used as the ground truth of synthetic runs
TRUTH = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def chinchilla_runs(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    N = np.repeat(np.logspace(7, 9, 5), 4)
    D = np.tile(np.logspace(9, 10.5, 4), 5)
    clean = TRUTH["E"] + TRUTH["A"] / N ** TRUTH["alpha"] + TRUTH["B"] / D ** TRUTH["beta"]
    return N, D, clean * np.exp(rng.normal(0, noise, N.size))


def test_power_law_recovers_parameters():
    rng = np.random.default_rng(1)
    x = np.array([64, 128, 256, 512, 1024, 2048], dtype=float)
    y = (2.0 + 5.0 * x ** -0.5) * np.exp(rng.normal(0, 0.003, x.size))
    fit = fit_power_law(x, y)
    assert fit.E == pytest.approx(2.0, abs=0.05)
    assert fit.alpha == pytest.approx(0.5, abs=0.1)
    low, high = fit.intervals["E"]
    assert low <= fit.E <= high
    assert fit.holdout["abs_rel_error"] < 0.01
    assert np.allclose(fit.predict(x), y, rtol=0.01)
    low, high = fit.predict_interval(4096)
    assert low <= fit.predict(4096) <= high


def test_chinchilla_recovers_parameters_and_intervals():
    N, D, L = chinchilla_runs(noise=0.002)
    fit = fit_chinchilla(N, D, L, bootstrap=40)
    assert fit.converged
    assert fit.alpha == pytest.approx(TRUTH["alpha"], abs=0.03)
    assert fit.beta == pytest.approx(TRUTH["beta"], abs=0.03)
    assert fit.E == pytest.approx(TRUTH["E"], rel=0.05)
    for name in ("alpha", "beta"):
        low, high = fit.intervals[name]
        assert low <= TRUTH[name] + 0.02 and high >= TRUTH[name] - 0.02
    assert fit.holdout["abs_rel_error"] < 0.02


def test_compute_optimal_matches_brute_force():
    fit = ChinchillaFit(objective=0.0, converged=True, **TRUTH)
    for C in (1e20, 1e23):
        n_opt, d_opt = fit.compute_optimal(C)
        assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-9)
        grid = np.logspace(6, 13, 20001)
        brute = grid[np.argmin(fit.predict(grid, C / (6 * grid)))]
        assert n_opt == pytest.approx(brute, rel=0.01)


@pytest.mark.parametrize("kwargs,message", [
    (dict(x=[1, 2], loss=[3, 2]), "at least 3"),
    (dict(x=[1, 2, -4], loss=[3, 2, 1]), "must be positive"),
    (dict(x=[1, 2, 4], loss=[3, float("nan"), 1]), "NaN"),
    (dict(x=[8, 8, 8], loss=[3, 2, 1]), "all sizes are equal"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ScalingFitError, match=message):
        fit_power_law(**kwargs)


def test_few_sizes_warn():
    with pytest.warns(FewSizesWarning, match="5 or more"):
        fit_power_law([64, 128, 256, 512], [3.0, 2.6, 2.4, 2.3], bootstrap=0)


def test_drop_early():
    steps, losses = drop_early([0, 100, 500, 1000], [9.0, 5.0, 3.0, 2.0], fraction=0.1)
    assert steps.tolist() == [100, 500, 1000] and losses.tolist() == [5.0, 3.0, 2.0]


def test_width_limit_recovers_rates():
    widths = np.array([64, 128, 256, 512, 1024])
    steps = np.arange(1, 11)
    limit = 2.0 + 3.0 / steps
    # early steps deviate like 1/width, late steps like width^-0.5 (Bordelon et al. 2024's picture)
    early = steps <= 5
    deviation = np.where(early[None, :], 4.0 / widths[:, None], 0.5 / np.sqrt(widths[:, None]))
    curves = limit[None, :] + deviation
    result = width_limit(widths, steps, curves)
    assert all(result.wider_is_better)
    assert result.rates["window_0"] == pytest.approx(1.0, abs=0.05)
    assert result.rates["window_1"] == pytest.approx(0.5, abs=0.05)
    assert np.allclose(result.limit, limit, atol=1e-3)
    with pytest.raises(ScalingFitError, match="shape"):
        width_limit(widths, steps, curves[:, :5])


def test_the_fits_import_from_the_package_as_earlier_readmes_wrote():
    import hptransfer.scaling as package
    from hptransfer.scaling import fit

    for name in ("fit_power_law", "fit_chinchilla", "width_limit"):
        assert getattr(package, name) is getattr(fit, name)
