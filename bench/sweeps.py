"""LR sweeps shared by the transfer benchmarks: octave grid, half-octave refinement around the minimum, mean
over seeds, interpolated optimum (hptransfer.tune.interpolated_optimum)."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from hptransfer.tune import interpolated_optimum


@dataclass
class Sweep:
    """Mean final validation loss per log2 LR (NaN when any seed diverged) and the optimum."""

    points: dict[float, float] = field(default_factory=dict)
    per_seed: dict[float, list[float]] = field(default_factory=dict)
    optimum: float = float("nan")
    at_edge: bool = False
    best_loss: float = float("nan")
    seconds: float = 0.0

    def loss_at(self, log2_lr: float) -> float:
        return self.points.get(log2_lr, float("nan"))

    def to_dict(self) -> dict:
        return {"points": {str(k): v for k, v in sorted(self.points.items())}, "optimum_log2_lr": self.optimum,
                "at_edge": self.at_edge, "best_loss": self.best_loss, "seconds": self.seconds,
                "per_seed": {str(k): v for k, v in sorted(self.per_seed.items())}}


def lr_sweep(run: Callable[[float, int], float], grid: list[float], seeds: list[int], refine: bool = True) -> Sweep:
    """``run(log2_lr, seed)`` -> final validation loss (NaN if diverged)."""
    sweep = Sweep()
    started = time.perf_counter()

    def evaluate(x: float) -> None:
        if x in sweep.points:
            return
        losses = [run(x, seed) for seed in seeds]
        sweep.per_seed[x] = losses
        sweep.points[x] = statistics.fmean(losses) if all(math.isfinite(v) for v in losses) else float("nan")

    for x in grid:
        evaluate(x)
    if refine:
        finite = {x: y for x, y in sweep.points.items() if math.isfinite(y)}
        if finite:
            best = min(finite, key=finite.get)
            for x in (best - 0.5, best + 0.5):
                if min(grid) <= x <= max(grid):
                    evaluate(x)
    xs = sorted(sweep.points)
    sweep.optimum, _, sweep.at_edge = interpolated_optimum(xs, [sweep.points[x] for x in xs])
    sweep.best_loss = min(y for y in sweep.points.values() if math.isfinite(y))
    sweep.seconds = time.perf_counter() - started
    return sweep


def spread(optima: list[float]) -> float:
    return max(optima) - min(optima)
