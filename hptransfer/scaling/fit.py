"""Scaling-law fits and the infinite-width limit, from ladders of mu-P models trained with the same settings.

- ``fit_power_law(x, loss)``: loss = E + A * x^-alpha (Kaplan/Cerebras-GPT style, with an irreducible term).
- ``fit_chinchilla(N, D, loss)``: loss = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. (2022) do:
  Huber loss (delta 1e-3) on log loss through log-sum-exp, *summed* over points (Besiroglu et al. 2024 showed
  averaging stops L-BFGS early), L-BFGS from a grid of starts. The 4,500-start grid is scored in one vectorized
  pass and only the best starts are refined, with analytic gradients, so a fit takes well under a second.
- ``width_limit(widths, steps, losses)``: extrapolate each step's loss in 1/width to infinite width and measure
  how fast finite widths approach it early vs late in training (Bordelon, Atanasov, Pehlevan 2024: ~1/width
  early, width^-c late).

Every fit returns an object with the parameters, ``predict``, bootstrap intervals and a leave-largest-out check.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import minimize, nnls

from ..errors import HptError

HUBER_DELTA = 1e-3


class ScalingFitError(HptError, ValueError):
    """Bad input to a fit (too few points, non-positive or NaN values, all sizes equal) or a fit that failed."""


class FewSizesWarning(UserWarning):
    """Fewer than 5 distinct sizes: extrapolations from so few models are unreliable (Choshen et al. 2025)."""


def _check(name: str, values: Sequence[float], minimum: int = 3) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size < minimum:
        raise ScalingFitError(f"{name} has {array.size} point(s); a fit needs at least {minimum}")
    if not np.all(np.isfinite(array)):
        raise ScalingFitError(f"{name} contains NaN or infinite values at positions "
                              f"{np.flatnonzero(~np.isfinite(array))[:8].tolist()}: drop diverged runs first")
    if np.any(array <= 0):
        raise ScalingFitError(f"{name} must be positive; found {array[array <= 0][:5].tolist()}")
    return array


def _distinct_sizes(name: str, sizes: np.ndarray) -> None:
    distinct = np.unique(sizes).size
    if distinct == 1:
        raise ScalingFitError(f"all {name} are equal ({sizes[0]:g}); a scaling law needs several sizes")
    if distinct < 5:
        warnings.warn(f"only {distinct} distinct {name}; 5 or more are advised for a reliable fit",
                      FewSizesWarning, stacklevel=3)


def _percentile_intervals(samples: list, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """10th/90th percentiles of bootstrap refits, per parameter (empty without samples)."""
    if not samples:
        return {}
    arr = np.array(samples)
    return {k: (float(np.percentile(arr[:, i], 10)), float(np.percentile(arr[:, i], 90))) for i, k in enumerate(names)}


def drop_early(steps: Sequence[float], *arrays: Sequence[float], fraction: float = 0.1) -> tuple[np.ndarray, ...]:
    """Drop checkpoints in the first ``fraction`` of training (they bias fits; Choshen et al. 2025)."""
    steps_arr = np.asarray(steps, dtype=float)
    keep = steps_arr >= fraction * steps_arr.max()
    return (steps_arr[keep],) + tuple(np.asarray(a)[keep] for a in arrays)


# ---- L = E + A x^-alpha -----------------------------------------------------------------------------
@dataclass
class PowerLawFit:
    """loss = E + A * x^-alpha; intervals are bootstrap 10th/90th percentiles."""

    E: float
    A: float
    alpha: float
    rmse_log: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    holdout: dict[str, float] = field(default_factory=dict)
    samples: list[tuple[float, float, float]] = field(default_factory=list, repr=False)

    def predict(self, x: float | Sequence[float]) -> np.ndarray:
        return self.E + self.A * np.asarray(x, dtype=float) ** -self.alpha

    def predict_interval(self, x: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """10th/90th percentile of the bootstrap refits' predictions at x (the fit itself without samples)."""
        x = np.asarray(x, dtype=float)
        if not self.samples:
            return self.predict(x), self.predict(x)
        preds = np.array([E + A * x ** -alpha for E, A, alpha in self.samples])
        return np.percentile(preds, 10, axis=0), np.percentile(preds, 90, axis=0)

    def __repr__(self) -> str:
        return (f"PowerLawFit(loss = {self.E:.4g} + {self.A:.4g} * x^-{self.alpha:.4g}, rmse(log)={self.rmse_log:.2g}"
                f", holdout={self.holdout or None})")


def _power_law_at(alpha: float, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """For fixed alpha, E and A >= 0 by non-negative least squares; returns (E, A, sum of squares in log)."""
    design = np.stack([np.ones_like(x), x ** -alpha], axis=1)
    (E, A), _ = nnls(design, y)
    pred = np.maximum(E + A * x ** -alpha, 1e-12)
    return float(E), float(A), float(np.sum((np.log(pred) - np.log(y)) ** 2))


def _fit_power_law_core(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    alphas = np.exp(np.linspace(np.log(1e-3), np.log(4.0), 200))
    scores = [_power_law_at(a, x, y)[2] for a in alphas]
    best = int(np.argmin(scores))
    bounds = (np.log(1e-4), np.log(8.0))  # keep the search where x^-alpha is representable
    result = minimize(lambda v: _power_law_at(float(np.exp(np.clip(v[0], *bounds))), x, y)[2], [np.log(alphas[best])],
                      method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 2000})
    alpha = float(np.exp(np.clip(result.x[0], *bounds)))
    E, A, sse = _power_law_at(alpha, x, y)
    return E, A, alpha, sse


def fit_power_law(x: Sequence[float], loss: Sequence[float], *, bootstrap: int = 200, seed: int = 0) -> PowerLawFit:
    """Fit loss = E + A * x^-alpha (E, A >= 0) by least squares on log loss; alpha by a grid, then refined.

    Args:
        x: sizes (parameters, width, tokens or compute); loss: the final loss of each.
        bootstrap: resamples (of points) for the 10th/90th-percentile intervals; 0 to skip.
    """
    xs, ys = _check("x", x), _check("loss", loss)
    if xs.size != ys.size:
        raise ScalingFitError(f"x has {xs.size} values but loss has {ys.size}")
    _distinct_sizes("sizes", xs)
    E, A, alpha, sse = _fit_power_law_core(xs, ys)
    fit = PowerLawFit(E, A, alpha, math.sqrt(sse / xs.size))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, xs.size, xs.size)
        if np.unique(xs[pick]).size < 3:
            continue
        samples.append(_fit_power_law_core(xs[pick], ys[pick])[:3])
    fit.intervals = _percentile_intervals(samples, ("E", "A", "alpha"))
    fit.samples = [tuple(map(float, row)) for row in samples]
    fit.holdout = _holdout_power_law(xs, ys)
    return fit


def _holdout_power_law(xs: np.ndarray, ys: np.ndarray) -> dict[str, float]:
    largest = xs.max()
    keep = xs < largest
    if np.unique(xs[keep]).size < 3:
        return {}
    E, A, alpha, _ = _fit_power_law_core(xs[keep], ys[keep])
    predicted = E + A * largest ** -alpha
    actual = float(np.mean(ys[~keep]))
    return {"size": float(largest), "predicted": float(predicted), "actual": actual,
            "abs_rel_error": abs(predicted - actual) / actual}


# ---- L = E + A/N^alpha + B/D^beta ---------------------------------------------------------------------
@dataclass
class ChinchillaFit:
    """loss = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Approach 3)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    converged: bool
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    holdout: dict[str, float] = field(default_factory=dict)

    def predict(self, N: float | Sequence[float], D: float | Sequence[float]) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    def compute_optimal(self, C: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimizing the fitted loss at compute C = 6 N D (Hoffmann et al. eq. 4)."""
        C = np.asarray(C, dtype=float)
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        a = self.beta / (self.alpha + self.beta)
        b = self.alpha / (self.alpha + self.beta)
        return G * (C / 6.0) ** a, (1.0 / G) * (C / 6.0) ** b

    def __repr__(self) -> str:
        return (f"ChinchillaFit(E={self.E:.4g}, A={self.A:.4g}, B={self.B:.4g}, alpha={self.alpha:.4g}, "
                f"beta={self.beta:.4g}, converged={self.converged})")


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    absr = np.abs(r)
    value = np.where(absr <= delta, 0.5 * r ** 2, delta * (absr - 0.5 * delta))
    grad = np.where(absr <= delta, r, delta * np.sign(r))
    return value, grad


def _chinchilla_terms(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray) -> tuple[np.ndarray, ...]:
    """For parameters (..., 5) = (a, b, e, alpha, beta): log-sum-exp prediction and softmax weights."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    terms = np.stack([a - alpha * logN, b - beta * logD, np.broadcast_to(e, (a - alpha * logN).shape)], axis=-1)
    top = terms.max(axis=-1, keepdims=True)
    weights = np.exp(terms - top)
    total = weights.sum(axis=-1, keepdims=True)
    return (top + np.log(total))[..., 0], weights / total


def _chinchilla_objective(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray,
                          delta: float) -> tuple[float, np.ndarray]:
    pred, w = _chinchilla_terms(theta[None, :], logN, logD)
    value, dr = _huber(pred[0] - logL, delta)
    w = w[0]
    grad = np.array([np.sum(dr * w[:, 0]), np.sum(dr * w[:, 1]), np.sum(dr * w[:, 2]),
                     np.sum(dr * w[:, 0] * -logN), np.sum(dr * w[:, 1] * -logD)])
    return float(np.sum(value)), grad


def chinchilla_grid() -> np.ndarray:
    """Hoffmann et al.'s starting grid: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25}."""
    alpha = beta = np.arange(0.0, 2.01, 0.5)
    e = np.arange(-1.0, 1.01, 0.5)
    a = b = np.arange(0.0, 25.01, 5.0)
    grid = np.stack(np.meshgrid(a, b, e, alpha, beta, indexing="ij"), axis=-1).reshape(-1, 5)
    return grid


def _fit_chinchilla_core(logN: np.ndarray, logD: np.ndarray, logL: np.ndarray, delta: float,
                         starts: np.ndarray, refine: int) -> tuple[np.ndarray, float, bool]:
    pred, _ = _chinchilla_terms(starts, logN, logD)  # (starts, points): every start scored at once
    scores = _huber(pred - logL[None, :], delta)[0].sum(axis=1)
    order = np.argsort(scores)[:refine]
    best_theta, best_value, converged = None, np.inf, False
    for index in order:
        result = minimize(_chinchilla_objective, starts[index], args=(logN, logD, logL, delta), jac=True,
                          method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
        if result.fun < best_value:
            best_theta, best_value, converged = result.x, float(result.fun), bool(result.success)
    return best_theta, best_value, converged


def fit_chinchilla(N: Sequence[float], D: Sequence[float], loss: Sequence[float], *, bootstrap: int = 100,
                   delta: float = HUBER_DELTA, refine: int = 16, seed: int = 0) -> ChinchillaFit:
    """Fit loss = E + A/N^alpha + B/D^beta the Chinchilla way (Huber on log loss, summed; L-BFGS from a grid).

    Args:
        N: model sizes (parameters). D: training tokens. loss: final loss of each run.
        bootstrap: refits on resampled *runs* for 10th/90th-percentile intervals (0 to skip).
        refine: how many of the best grid starts L-BFGS refines (the whole grid is scored first).

    Raises:
        ScalingFitError: on bad input, or when no start converges.
    """
    Ns, Ds, Ls = _check("N", N), _check("D", D), _check("loss", loss)
    if not Ns.size == Ds.size == Ls.size:
        raise ScalingFitError(f"N, D and loss must have equal lengths, got {Ns.size}, {Ds.size}, {Ls.size}")
    _distinct_sizes("model sizes N", Ns)
    logN, logD, logL = np.log(Ns), np.log(Ds), np.log(Ls)
    starts = chinchilla_grid()
    theta, value, converged = _fit_chinchilla_core(logN, logD, logL, delta, starts, refine)
    if theta is None or not np.all(np.isfinite(theta)):
        raise ScalingFitError("the Chinchilla fit did not converge from any start; check the data (enough sizes "
                              "and token counts, losses that fall with both)")
    if not converged:
        warnings.warn("L-BFGS stopped before its tolerance; the fitted parameters may be imprecise", stacklevel=2)
    fit = ChinchillaFit(E=float(np.exp(theta[2])), A=float(np.exp(theta[0])), B=float(np.exp(theta[1])),
                        alpha=float(theta[3]), beta=float(theta[4]), objective=value, converged=converged)
    rng = np.random.default_rng(seed)
    warm = np.vstack([theta[None, :], starts[rng.choice(len(starts), 4, replace=False)]])
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, Ns.size, Ns.size)
        if np.unique(Ns[pick]).size < 2:
            continue
        t, _, _ = _fit_chinchilla_core(logN[pick], logD[pick], logL[pick], delta, warm, refine=2)
        samples.append([np.exp(t[2]), np.exp(t[0]), np.exp(t[1]), t[3], t[4]])
    fit.intervals = _percentile_intervals(samples, ("E", "A", "B", "alpha", "beta"))
    largest = Ns.max()
    keep = Ns < largest
    if np.unique(Ns[keep]).size >= 2:
        t, _, _ = _fit_chinchilla_core(logN[keep], logD[keep], logL[keep], delta, starts, refine)
        held = ChinchillaFit(float(np.exp(t[2])), float(np.exp(t[0])), float(np.exp(t[1])), float(t[3]), float(t[4]),
                             0.0, True)
        predicted = held.predict(Ns[~keep], Ds[~keep])
        fit.holdout = {"size": float(largest), "abs_rel_error": float(np.mean(np.abs(predicted - Ls[~keep]) / Ls[~keep]))}
    return fit


# ---- the infinite-width limit ------------------------------------------------------------------------
@dataclass
class WidthLimit:
    """Loss curves extrapolated to infinite width, and how fast finite widths approach them.

    Attributes:
        steps: logged steps. limit: L_inf(t), from a fit of L_w(t) = L_inf(t) + c(t) width^-r(t) at each step.
        rates: per time window, the median r(t): finite widths approach the limit like width^-r.
        wider_is_better: per step, whether loss falls monotonically with width.
    """

    widths: list[int]
    steps: list[float]
    limit: list[float]
    rates: dict[str, float]
    wider_is_better: list[bool]


def width_limit(widths: Sequence[int], steps: Sequence[float], losses: Sequence[Sequence[float]],
                windows: int = 2) -> WidthLimit:
    """From a width ladder trained with the same hyperparameters: ``losses[i][t]`` is width i's loss at step t."""
    w = _check("widths", widths)
    if np.unique(w).size < 3:
        raise ScalingFitError("width_limit needs at least 3 distinct widths")
    curves = np.asarray(losses, dtype=float)
    if curves.shape != (w.size, len(steps)):
        raise ScalingFitError(f"losses must have shape (len(widths), len(steps)) = ({w.size}, {len(steps)}), "
                              f"got {curves.shape}")
    if not np.all(np.isfinite(curves)):
        raise ScalingFitError("losses contain NaN or infinite values: drop diverged runs first")
    # per step, L_w(t) = L_inf(t) + c(t) * width^-r(t): assuming r = 1 would bias L_inf whenever it is not
    fits = [_fit_power_law_core(w, curves[:, t]) for t in range(len(steps))]
    limit = np.array([f[0] for f in fits])
    per_step_rate = np.array([f[2] for f in fits])
    rates = {f"window_{k}": float(np.median(per_step_rate[chunk]))
             for k, chunk in enumerate(np.array_split(np.arange(len(steps)), windows)) if chunk.size}
    order = np.argsort(w)
    wider = [bool(np.all(np.diff(curves[order, t]) < 0)) for t in range(len(steps))]
    return WidthLimit([int(x) for x in w], [float(s) for s in steps], limit.tolist(), rates, wider)
