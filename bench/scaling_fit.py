"""Speed of the Chinchilla fit on 20 runs: hptransfer (whole 4,500-start grid scored at once, best 16 refined
with analytic gradients) vs a naive loop of scipy L-BFGS starts with numerical gradients (timed on a subset of
starts and extrapolated to the whole grid, said so in the output).

    python bench/scaling_fit.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.optimize import minimize

from hptransfer.scaling.fit import HUBER_DELTA, _chinchilla_objective, chinchilla_grid, fit_chinchilla

from common import write_result


def main() -> None:
    rng = np.random.default_rng(0)
    N = np.repeat(np.logspace(7, 9, 5), 4)
    D = np.tile(np.logspace(9, 10.5, 4), 5)
    L = (1.69 + 406.4 / N ** 0.34 + 410.7 / D ** 0.28) * np.exp(rng.normal(0, 0.002, N.size))
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        fit = fit_chinchilla(N, D, L, bootstrap=0)
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    fit_chinchilla(N, D, L, bootstrap=100)
    with_bootstrap = time.perf_counter() - start
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    grid = chinchilla_grid()
    subset = grid[rng.choice(len(grid), 100, replace=False)]
    start = time.perf_counter()
    for theta in subset:
        minimize(lambda t: _chinchilla_objective(t, logN, logD, logL, HUBER_DELTA)[0], theta, method="L-BFGS-B")
    naive_per_start = (time.perf_counter() - start) / len(subset)
    result = {"runs": int(N.size), "grid_starts": int(len(grid)), "fit_seconds_median": float(np.median(timings)),
              "fit_with_100_bootstraps_seconds": with_bootstrap,
              "naive_seconds_per_start": naive_per_start,
              "naive_full_grid_seconds_extrapolated": naive_per_start * len(grid),
              "fit": {"E": fit.E, "A": fit.A, "B": fit.B, "alpha": fit.alpha, "beta": fit.beta}}
    print(f"hptransfer fit of {N.size} runs (grid of {len(grid)} starts included): {result['fit_seconds_median']:.2f} s;"
          f" with 100 bootstrap refits: {with_bootstrap:.1f} s")
    print(f"naive loop: {naive_per_start * 1e3:.0f} ms per start, so about "
          f"{result['naive_full_grid_seconds_extrapolated'] / 60:.1f} min for the whole grid (extrapolated from 100)")
    print(f"wrote {write_result('scaling_fit', torch.device('cpu'), result)}")


if __name__ == "__main__":
    main()
