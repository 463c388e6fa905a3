"""LR sweeps shared by the transfer benchmarks: mean final validation loss over seeds per log2 LR, and the
interpolated optimum (hptransfer.pipeline.tune.interpolated_optimum).

Two ways to choose the points:
- ``lr_sweep``: a fixed grid (both sides of a comparison see the same points), plus half-octave points beside
  the minimum;
- ``basin_sweep``: a half-octave grid that starts at a guess and extends each side until the loss there is
  clearly worse than the best, so the budget goes to the basin instead of to points far outside it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from hptransfer.pipeline.tune import interpolated_optimum

Run = Callable[[float, int], float]  # (log2_lr, seed) -> final validation loss, NaN when diverged


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

    def evaluate(self, run: Run, log2_lr: float, seeds: list[int]) -> float:
        """Train every seed at ``log2_lr`` (once; later calls reuse the mean)."""
        if log2_lr not in self.points:
            started = time.perf_counter()
            losses = [run(log2_lr, seed) for seed in seeds]
            self.seconds += time.perf_counter() - started
            self.per_seed[log2_lr] = losses
            self.points[log2_lr] = (statistics.fmean(losses) if all(math.isfinite(v) for v in losses)
                                    else float("nan"))
        return self.points[log2_lr]

    def finish(self) -> "Sweep":
        xs = sorted(self.points)
        finite = [y for y in self.points.values() if math.isfinite(y)]
        if finite:
            self.optimum, _, self.at_edge = interpolated_optimum(xs, [self.points[x] for x in xs])
            self.best_loss = min(finite)
        return self

    def seed_optima(self) -> list[float]:
        """Each seed's own interpolated optimum: how far apart they are is the noise of ``optimum``."""
        xs = sorted(self.per_seed)
        n_seeds = len(self.per_seed[xs[0]]) if xs else 0
        optima = []
        for i in range(n_seeds):
            losses = [self.per_seed[x][i] for x in xs]
            optima.append(interpolated_optimum(xs, losses)[0] if any(map(math.isfinite, losses)) else math.nan)
        return optima

    def to_dict(self) -> dict:
        return {"points": {str(k): v for k, v in sorted(self.points.items())}, "optimum_log2_lr": self.optimum,
                "at_edge": self.at_edge, "best_loss": self.best_loss, "seconds": self.seconds,
                "seed_optima": self.seed_optima(),
                "per_seed": {str(k): v for k, v in sorted(self.per_seed.items())}}


def lr_sweep(run: Run, grid: list[float], seeds: list[int], refine: bool = True) -> Sweep:
    """Every point of ``grid``, then (``refine``) the half-octave points on both sides of the best one."""
    sweep = Sweep()
    for x in grid:
        sweep.evaluate(run, x, seeds)
    finite = {x: y for x, y in sweep.points.items() if math.isfinite(y)}
    if refine and finite:
        best = min(finite, key=finite.get)
        for x in (best - 0.5, best + 0.5):
            if min(grid) <= x <= max(grid):
                sweep.evaluate(run, x, seeds)
    return sweep.finish()


def basin_sweep(run: Run, seeds: list[int], start: float, step: float = 0.5,
                bounds: tuple[float, float] = (-16.0, -1.0), rise: float = 0.02) -> Sweep:
    """A grid of spacing ``step`` (octaves) grown outward from ``start`` until the basin is bracketed.

    A side stops growing when its outermost point diverged or its loss is more than ``rise`` (relative) above
    the best loss so far, or when the next point would leave ``bounds``. The best point is therefore always
    interior unless it sits on a bound, and where ``start`` was guessed does not decide the optimum: a bad
    guess costs extra points, not a wrong answer.
    """
    sweep = Sweep()
    start = round(start / step) * step
    sweep.evaluate(run, start, seeds)
    while True:
        finite = [y for y in sweep.points.values() if math.isfinite(y)]
        low, high = min(sweep.points), max(sweep.points)
        if not finite:  # everything so far diverged: only smaller learning rates can help
            grow = [low - step] if low - step >= bounds[0] else []
        else:
            ceiling = min(finite) * (1 + rise)
            grow = [x for x, edge in ((low - step, low), (high + step, high))
                    if bounds[0] <= x <= bounds[1]
                    and math.isfinite(sweep.points[edge]) and sweep.points[edge] <= ceiling]
        if not grow:
            return sweep.finish()
        for x in grow:
            sweep.evaluate(run, x, seeds)


def spread(optima: list[float]) -> float:
    return max(optima) - min(optima)


def add_sweep_arguments(parser: argparse.ArgumentParser, start: float) -> None:
    """The basin-sweep options every transfer benchmark takes."""
    parser.add_argument("--start", type=float, default=start, help="log2 LR the first size starts from")
    parser.add_argument("--bounds", type=float, nargs=2, default=[-16.0, -1.0], help="log2 LR range never left")
    parser.add_argument("--rise", type=float, default=0.02,
                        help="a side of the sweep stops once its loss is this much (relative) above the best")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are first_seed .. first_seed + seeds - 1 (to add seeds to a finished run)")


def sweep_settings(args: argparse.Namespace) -> dict:
    return {"kind": "basin", "step_octaves": 0.5, "start": args.start, "bounds": list(args.bounds), "rise": args.rise,
            "first_seed": args.first_seed}


def sweep_sizes(run: Callable[[float, int, int], float], sizes: list[int], args: argparse.Namespace,
                label: str) -> dict:
    """Basin sweeps over ``sizes`` (each starting from the previous size's optimum), then every size trained at
    the shared LR: the half-octave point nearest the median optimum. ``run(log2_lr, seed, size)``."""
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    sweeps: dict[int, Sweep] = {}
    start = args.start
    for size in sizes:
        sweeps[size] = basin_sweep(lambda x, seed, size=size: run(x, seed, size), seeds, start,
                                   bounds=tuple(args.bounds), rise=args.rise)
        start = sweeps[size].optimum if math.isfinite(sweeps[size].optimum) else start
        print(f"{label} {size}: optimum log2 lr {sweeps[size].optimum:.2f} (best loss {sweeps[size].best_loss:.4f}, "
              f"{len(sweeps[size].points)} points, {sweeps[size].seconds:.0f} s)", flush=True)
    optima = [s.optimum for s in sweeps.values()]
    shared = round(statistics.median(optima) * 2) / 2
    at_shared = [sweeps[size].evaluate(lambda x, seed, size=size: run(x, seed, size), shared, seeds)
                 for size in sizes]
    for sweep in sweeps.values():
        sweep.finish()
    optima = [s.optimum for s in sweeps.values()]
    return {"optima": {str(size): s.optimum for size, s in sweeps.items()},
            "optimum_at_edge": {str(size): s.at_edge for size, s in sweeps.items()},
            "spread_octaves": spread(optima), "shared_log2_lr": shared, "loss_at_shared": at_shared,
            "larger_better_at_shared": all(b < a for a, b in zip(at_shared, at_shared[1:])),
            "sweeps": {str(size): s.to_dict() for size, s in sweeps.items()}}


def width_sweeps(spec, scheme: str, data, settings, optim, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """sweep_sizes over ``args.widths`` for one scheme: each point trains ``spec`` (hptransfer.pipeline.train) at
    that width and LR, with ``settings`` and the seed, and scores its final validation loss."""
    from hptransfer.pipeline.train import HParams, TrainSettings, train

    def run(log2_lr: float, seed: int, width: int) -> float:
        return train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                     TrainSettings(**{**settings.__dict__, "seed": seed}), optim, width=width).val_loss

    return sweep_sizes(run, args.widths, args, label=f"{scheme} width")
