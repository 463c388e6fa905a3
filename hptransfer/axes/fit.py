"""How an optimum moves along one axis: a straight line in log2-log2 (a power law), fitted to the optima the proxy
measured at three or more settings, with the slope's interval and the prediction's interval at a new setting.

``log2 value* = intercept + slope * log2 setting``: the LR against training tokens (Bjorck et al. 2024 fit
LR*(D) = B * D^-beta), the LR against batch size (the square-root rule for Adam is slope 1/2), the weight decay
against the horizon. Least squares with Student-t intervals (n - 2 degrees of freedom); with a prior slope (a
rule from the literature, with its own uncertainty) the slope is the precision-weighted mean of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import HptError


class AxisFitError(HptError, ValueError):
    """Too few, repeated or non-finite settings or optima to fit how an optimum moves along an axis."""


def _t_quantile(level: float, dof: int) -> float:
    """The two-sided Student-t quantile (scipy when present; else the normal's, widened for small dof)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(0.5 + level / 2, dof))
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn, a dev dependency
        z = {0.9: 1.645, 0.95: 1.96, 0.99: 2.576}.get(level, 1.96)
        return z * (1 + 2.5 / max(dof, 1))


@dataclass
class OptimumFit:
    """``log2 y = intercept + slope * log2 x`` with its intervals; x is the axis (tokens, batch), y the optimum."""

    axis: str
    settings: list[float]
    optima: list[float]
    slope: float
    intercept: float
    slope_se: float
    residual_sd: float
    dof: int
    level: float = 0.95
    prior: tuple[float, float] | None = None  # (slope, sd) combined into ``slope``
    notes: list[str] = field(default_factory=list)
    noise_scale: float | None = None  # batch: the coordinate is -log2(1 + B_noise / B) instead of log2 B
    se: list[float] | None = None  # each optimum's standard error (octaves), when the fit was weighted by them

    def coordinate(self, x: float) -> float:
        """Where setting ``x`` sits on the fit's horizontal axis."""
        return -math.log2(1 + self.noise_scale / x) if self.noise_scale else math.log2(x)

    @property
    def slope_interval(self) -> tuple[float, float]:
        half = _t_quantile(self.level, max(self.dof, 1)) * self.slope_se
        return self.slope - half, self.slope + half

    def ratio(self, source: float, target: float) -> tuple[float, tuple[float, float]]:
        """How much the optimum multiplies by from setting ``source`` to ``target``, and its interval (the slope's
        interval: the anchor is the value tuned at ``source``)."""
        octaves = self.coordinate(target) - self.coordinate(source)
        low, high = sorted(s * octaves for s in self.slope_interval)
        return 2.0 ** (self.slope * octaves), (2.0**low, 2.0**high)

    def predict(self, x: float) -> tuple[float, tuple[float, float]]:
        """The fitted optimum at ``x`` and its prediction interval (line and scatter)."""
        xs = np.asarray([self.coordinate(v) for v in self.settings])
        weights = np.ones_like(xs) if self.se is None else 1 / np.asarray(self.se) ** 2
        center = float((weights * xs).sum() / weights.sum())
        lx = self.coordinate(x)
        y = self.intercept + self.slope * lx
        spread = math.sqrt(self.residual_sd**2 * (1 + 1 / len(xs)) + self.slope_se**2 * (lx - center) ** 2)
        half = _t_quantile(self.level, max(self.dof, 1)) * spread
        return 2.0**y, (2.0 ** (y - half), 2.0 ** (y + half))

    def to_dict(self) -> dict:
        return {"axis": self.axis, "settings": self.settings, "optima": self.optima, "slope": self.slope,
                "slope_interval": list(self.slope_interval), "intercept": self.intercept,
                "residual_sd_octaves": self.residual_sd, "level": self.level, "prior": self.prior,
                "notes": self.notes, "noise_scale": self.noise_scale, "se": self.se}


def fit_optimum(settings: Sequence[float], optima: Sequence[float], *, axis: str = "setting",
                prior: tuple[float, float] | None = None, level: float = 0.95,
                noise_scale: float | None = None, se: Sequence[float] | None = None) -> OptimumFit:
    """Fit ``log2 optimum`` against ``log2 setting`` (three or more distinct settings).

    Args:
        prior: (slope, sd) of a rule from the literature; combined with the fitted slope by their precisions
            (the fit's variance is its squared standard error), so few or noisy points lean on the rule.
        noise_scale: for the batch axis, the gradient noise scale B_noise measured on the proxy: the optimum is
            fitted as ``(1 + B_noise / B)^-slope`` (the square-root rule, slope 1/2, far below B_noise; flat far
            above it, where McCandlish et al.'s optimal step saturates) instead of a pure power of B.
        se: each optimum's standard error in octaves (``basin_optimum``'s): the points are weighted by it and the
            intervals use it (scaled up when the points scatter more than their errors say). Without it every
            point counts alike and the scatter about the line, floored at a quarter octave, is the noise.
    """
    xs = np.asarray(settings, dtype=float)
    ys = np.asarray(optima, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise AxisFitError(f"{axis}: {len(xs)} settings but {len(ys)} optima; give one optimum per setting")
    if not (np.all(np.isfinite(xs)) and np.all(xs > 0) and np.all(np.isfinite(ys)) and np.all(ys > 0)):
        raise AxisFitError(f"{axis}: settings and optima must be positive finite numbers, got {list(xs)} and "
                           f"{list(ys)}")
    if len(set(xs.tolist())) < 3:
        raise AxisFitError(f"{axis}: {len(set(xs.tolist()))} distinct setting(s) {sorted(set(xs.tolist()))}; a slope "
                           "with an interval needs the optimum at 3 or more (e.g. x1, x2, x4)")
    if noise_scale is not None and not (math.isfinite(noise_scale) and noise_scale > 0):
        raise AxisFitError(f"noise_scale={noise_scale!r}: give the gradient noise scale (a positive batch size)")
    lx = -np.log2(1 + noise_scale / xs) if noise_scale else np.log2(xs)
    ly = np.log2(ys)
    if se is None:
        weights = np.ones_like(lx)
    else:
        errors = np.asarray(se, dtype=float)
        if errors.shape != lx.shape or not (np.all(np.isfinite(errors)) and np.all(errors > 0)):
            raise AxisFitError(f"{axis}: se={list(errors.reshape(-1))}: give one positive standard error (octaves) "
                               "per optimum")
        weights = 1 / errors**2
    center = float((weights * lx).sum() / weights.sum())
    sxx = float((weights * (lx - center) ** 2).sum())
    level_y = float((weights * ly).sum() / weights.sum())
    slope = float((weights * (lx - center) * (ly - level_y)).sum() / sxx)
    intercept = float(level_y - slope * center)
    dof = len(lx) - 2
    residuals = ly - (intercept + slope * lx)
    if se is None:
        residual_sd = math.sqrt(float((residuals**2).sum()) / dof) if dof > 0 else 0.0
        # a perfect line on three points still has the optimum's own resolution as its noise: a grid's quarter octave
        residual_sd = max(residual_sd, 0.25)
        slope_se = residual_sd / math.sqrt(sxx)
    else:
        # the points' own errors, scaled up by the scatter when it is larger than they say (reduced chi-square)
        chi2 = float((weights * residuals**2).sum()) / dof if dof > 0 else 1.0
        scale = math.sqrt(max(chi2, 1.0))
        slope_se = scale / math.sqrt(sxx)
        residual_sd = scale * math.sqrt(len(lx) / float(weights.sum()))  # a typical point's error
    notes = []
    if prior is not None:
        prior_slope, prior_sd = prior
        weight_fit, weight_prior = 1 / slope_se**2, 1 / prior_sd**2
        combined = (slope * weight_fit + prior_slope * weight_prior) / (weight_fit + weight_prior)
        notes.append(f"fitted slope {slope:.3f} +- {slope_se:.3f} combined with the prior {prior_slope:g} +- "
                     f"{prior_sd:g}: {combined:.3f}")
        slope, slope_se = combined, 1 / math.sqrt(weight_fit + weight_prior)
        intercept = float(level_y - slope * center)
    return OptimumFit(axis, xs.tolist(), ys.tolist(), slope, intercept, slope_se, residual_sd, dof, level, prior,
                      notes, noise_scale, None if se is None else [float(e) for e in se])
