"""Where a sweep's loss basin bottoms out, and how well that is known: a parabola in log2 of the value, fitted by
least squares to every seed's losses within a window around the best point, with one offset per seed.

A three-point vertex through the best grid point (``pipeline.tune.interpolated_optimum``) is fine for picking a
value, but its error is a good fraction of an octave when the basin is flat, and it has no error bar. Fits of how
an optimum moves along an axis (``fit_optimum``) need both: the slope of a horizon rule is a tenth of an octave
per doubling, so the optima it is fitted to must be known to better than that. Seeds differ mostly by a constant
(a seed that draws a harder batch order is worse at every LR), so each seed gets its own offset and only the
shape is shared; the vertex's standard error comes from the fit's covariance by the delta method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .fit import AxisFitError


@dataclass(frozen=True)
class Basin:
    """The fitted bottom of a sweep: ``log2`` of the optimum, its standard error (octaves), the log2 values the
    parabola was fitted on, and whether the best point was at the sweep's edge (the optimum may lie beyond)."""

    log2: float
    se: float
    window: tuple[float, ...]
    at_edge: bool
    curvature: float  # loss per octave^2 at the vertex (half the second derivative)

    @property
    def value(self) -> float:
        return 2.0**self.log2

    def to_dict(self) -> dict:
        return {"log2": self.log2, "se": self.se, "window": list(self.window), "at_edge": self.at_edge,
                "curvature": self.curvature}


def basin_optimum(log2_values: Sequence[float], losses: Sequence[Sequence[float]] | Sequence[float], *,
                  window: float = 1.0, min_se: float = 0.02) -> Basin:
    """The loss basin's vertex from a sweep over ``log2_values``.

    Args:
        losses: per value, the losses of each seed (the same seeds, in the same order, at every value), or one
            loss per value. Non-finite losses (a diverged run) are left out of the fit.
        window: octaves either side of the best seed-mean point that the parabola is fitted on (at least 5
            points are used: the window widens until it holds them).
        min_se: the smallest standard error reported (octaves): a parabola through noise-free points is exact,
            but the basin is not a parabola.
    """
    xs = np.asarray(log2_values, dtype=float)
    table = np.asarray([[v] if np.ndim(v) == 0 else list(v) for v in losses], dtype=float)
    if xs.ndim != 1 or len(xs) != len(table):
        raise AxisFitError(f"{len(xs)} values but {len(table)} rows of losses; give one row (the seeds' losses) per "
                           "value")
    if len(set(xs.tolist())) < 3:
        raise AxisFitError(f"a basin needs losses at 3 or more values, got {sorted(set(xs.tolist()))}")
    order = np.argsort(xs)
    xs, table = xs[order], table[order]
    means = np.where(np.isfinite(table).all(axis=1), table.mean(axis=1), np.inf)
    if not np.isfinite(means).any():
        raise AxisFitError("no value has a finite loss on every seed: lower the sweep's values")
    best = int(np.argmin(means))
    at_edge = best in (0, len(xs) - 1)
    half = window
    while True:
        inside = (np.abs(xs - xs[best]) <= half + 1e-9) & np.isfinite(means)
        if inside.sum() >= min(5, int(np.isfinite(means).sum())) or half > xs[-1] - xs[0]:
            break
        half += window / 2
    x, rows = xs[inside], table[inside]
    n_values, n_seeds = rows.shape
    # design: (x - x_best)^2, (x - x_best), one offset per seed
    shift = xs[best]
    u = np.repeat(x - shift, n_seeds)
    seed = np.tile(np.arange(n_seeds), n_values)
    design = np.column_stack([u**2, u] + [(seed == s).astype(float) for s in range(n_seeds)])
    y = rows.reshape(-1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if not a > 0 or len(x) < 3:  # no bowl within the window: the best point, known to its grid spacing
        spacing = float(np.min(np.diff(xs))) if len(xs) > 1 else 1.0
        return Basin(float(shift), max(spacing, min_se), tuple(x.tolist()), at_edge, 0.0)
    vertex = -b / (2 * a)
    dof = len(y) - design.shape[1]
    residual = y - design @ coef
    sigma2 = float(residual @ residual) / dof if dof > 0 else 0.0
    covariance = sigma2 * np.linalg.pinv(design.T @ design)[:2, :2]
    gradient = np.array([b / (2 * a * a), -1 / (2 * a)])  # d vertex / d(a, b)
    se = math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
    lo, hi = float(x[0]), float(x[-1])
    log2 = float(np.clip(shift + vertex, lo, hi))  # a vertex outside the points it was fitted on is not measured
    return Basin(log2, max(se, min_se), tuple(x.tolist()), at_edge or log2 in (lo, hi) and lo != hi, a)
