"""The pipeline's step beyond width and depth: when the target trains for other steps or with another batch than
the proxy, sweep the proxy's LR at several horizons / batch sizes, fit how the optimum moves, and carry the LR
and weight decay to the target's setting with hptransfer.transfer. Writes axes.json and one picture per axis
(axes_horizon.png, axes_batch.png); every sweep is its own study in the run's ledger, so a rerun resumes it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from ..axes import (Basin, Fits, NoiseScale, NoiseScaleError, Setting, basin_optimum, fit_optimum,
                    gradient_noise_scale, transfer)
from ..axes.fit import OptimumFit
from ..axes.rules import SQRT_PRIOR
from ..validate import number
from .report import _pyplot
from .train import HParams, TrainSettings, task_loss, train
from .tune import SweepSettings, run_sweep, write_json


def target_setting(cfg: DictConfig) -> tuple[int, int]:
    """The target's (steps, batch size): ``axes.target_*`` or the proxy's own."""
    axes = cfg.get("axes")
    steps = (axes.target_steps if axes is not None else None) or cfg.train.steps
    batch = (axes.target_batch_size if axes is not None else None) or cfg.train.batch_size
    return int(steps), int(batch)


def check_axes(cfg: DictConfig, error: type[Exception]) -> None:
    """Before anything runs: fractions are positive, and an axis that differs has its sweeps configured."""
    axes = cfg.get("axes")
    if axes is None:
        return
    for key in ("horizons", "batch_sizes"):
        values = list(axes.get(key) or [])
        for value in values:
            number(f"axes.{key} entry", value, above=0, error=error, fix=f"axes.{key}={values}")
        if values and len(set(values)) < 3:
            raise error(f"axes.{key}={values}: the fit needs 3 or more distinct settings, e.g. [0.25, 0.5, 1.0]")
    seeds = list(axes.get("seeds") or [])
    for seed in seeds:
        number("axes.seeds entry", seed, minimum=0, integer=True, error=error, fix=f"axes.seeds={seeds}")
    if len(set(seeds)) < len(seeds):
        raise error(f"axes.seeds={seeds} repeats a seed: give distinct seeds, e.g. [0, 1, 2, 3]")
    steps, batch = target_setting(cfg)
    if steps != cfg.train.steps and not axes.horizons:
        raise error(f"axes.target_steps={steps} differs from train.steps={cfg.train.steps} (the proxy's): set "
                    "axes.horizons (e.g. [0.25, 0.5, 1.0]) so that the LR's move with the horizon is measured")
    if batch != cfg.train.batch_size and not axes.batch_sizes:
        raise error(f"axes.target_batch_size={batch} differs from train.batch_size={cfg.train.batch_size} (the "
                    "proxy's): set axes.batch_sizes (e.g. [0.25, 0.5, 1.0])")


@dataclass
class AxesResult:
    settings: TrainSettings  # the target's
    weight_decay: float
    hp: HParams
    summary: dict[str, Any]


def run_axes(ctx: Any, run_dir: Path, hp: HParams, storage: str,
             progress: Callable[[str], None] | None = None) -> AxesResult | None:
    """The target's settings and hyperparameters after the horizon and batch rules (None: nothing differs)."""
    steps, batch = target_setting(ctx.cfg)
    if (steps, batch) == (ctx.settings.steps, ctx.settings.batch_size):
        return None
    seq = ctx.settings.seq_len if ctx.data.task == "lm" else 1
    size = max(ctx.cfg.proxy.sizes)
    proxy = Setting(width=size, batch_size=ctx.settings.batch_size, steps=ctx.settings.steps, seq_len=seq)
    target = Setting(width=ctx.spec.width, batch_size=batch, steps=steps, seq_len=seq)
    sweep = SweepSettings(kind="lr_grid", log2_lr_min=ctx.sweep.log2_lr_min, log2_lr_max=ctx.sweep.log2_lr_max,
                          log2_lr_step=ctx.sweep.log2_lr_step, storage=ctx.sweep.storage, seed=ctx.sweep.seed,
                          heartbeat_s=ctx.sweep.heartbeat_s, stale_after_s=ctx.sweep.stale_after_s)
    fits = Fits()
    seeds = [int(seed) for seed in (ctx.cfg.axes.get("seeds") or [ctx.settings.seed])]
    basins: dict[str, list[dict[str, Any]]] = {}
    for axis, fractions, field in (("horizon", ctx.cfg.axes.horizons, "steps"),
                                   ("batch", ctx.cfg.axes.batch_sizes, "batch_size")):
        if getattr(target, field) == getattr(proxy, field) or not fractions:
            continue
        xs, found = [], []
        for fraction in sorted(float(f) for f in fractions):
            value = max(1, int(round(getattr(ctx.settings, field) * fraction)))
            table: dict[float, list[float]] = {}
            for seed in seeds:
                settings = replace(ctx.settings, **{field: value, "seed": seed})

                def objective(size: int, trial_hp: HParams, settings: TrainSettings = settings) -> Any:
                    return train(ctx.spec, ctx.scheme, ctx.data, trial_hp, settings, ctx.optim, width=size)

                study = replace(sweep, study=f"axes-{axis}-{value}-seed{seed}")
                fingerprint = {"axis": axis, field: value, "seed": seed, "base": asdict(ctx.settings),
                               "hp": asdict(hp), "scheme": ctx.scheme, "spec": asdict(ctx.spec)}
                (optimum,) = run_sweep(objective, [size], hp, study, storage, fingerprint, progress)
                for log2_lr, loss in optimum.points:
                    table.setdefault(log2_lr, []).append(loss)
            grid = sorted(x for x in table if len(table[x]) == len(seeds))
            basin = basin_optimum(grid, [table[x] for x in grid], window=float(ctx.cfg.axes.window))
            setting = replace(proxy, **{field: value})
            xs.append(setting.tokens if axis == "horizon" else setting.batch_size)
            found.append(basin)
            if progress:
                progress(f"axes: {axis} {value}: optimum log2 LR {basin.log2:.2f} +- {basin.se:.2f}"
                         + (" (at the LR grid's edge: widen sweep.log2_lr_min/max)" if basin.at_edge else ""))
        noise = _noise_scale(ctx, size, hp) if axis == "batch" else None
        if noise is not None:
            fits.noise = noise
        fit = fit_optimum(xs, [b.value for b in found], axis="tokens" if axis == "horizon" else "batch",
                          prior=SQRT_PRIOR if axis == "batch" else None,
                          noise_scale=noise.b_noise if noise is not None else None, se=[b.se for b in found])
        fit.notes += [f"{axis} {x:g}: the optimum is at the LR grid's edge (log2 {b.log2:.2f}); the fit there is "
                      "a bound, not a measurement: widen sweep.log2_lr_min / log2_lr_max" for x, b in zip(xs, found)
                      if b.at_edge]
        basins[axis] = [dict(b.to_dict(), setting=x) for x, b in zip(xs, found)]
        setattr(fits, axis, fit)
        _plot(axis, fit, found, proxy, target, hp.lr, run_dir / f"axes_{axis}.png")
    moved = transfer({"lr": hp.lr, "weight_decay": ctx.optim.weight_decay}, proxy, target, fits)
    summary = {"proxy": asdict(proxy), "target": asdict(target), "fits": {k: getattr(fits, k).to_dict() for k in ("horizon", "batch") if getattr(fits, k)},
               "noise_scale": asdict(fits.noise) if fits.noise is not None else None, "transfer": moved.to_dict(),
               "basins": basins, "seeds": seeds}
    write_json(run_dir / "axes.json", summary)
    settings = replace(ctx.settings, steps=steps, batch_size=batch)
    return AxesResult(settings, moved["weight_decay"], replace(hp, lr=moved["lr"]), summary)


NOISE_PAIRS = 30  # (small, big) batch pairs of the noise-scale estimate


def _noise_scale(ctx: Any, size: int, hp: HParams) -> NoiseScale | None:
    """The gradient noise scale of the proxy trained at ``hp`` (McCandlish's two-batch estimate on validation
    batches of a quarter of and 4x the batch); None when it cannot be told (a diverged run, noise that swamps it)."""
    found: list[NoiseScale] = []
    small, big = max(1, ctx.settings.batch_size // 4), 4 * ctx.settings.batch_size

    def measure(model: torch.nn.Module) -> None:
        generator = torch.Generator().manual_seed(123)
        batch = lambda n: ctx.data.batch("val", n, ctx.settings.seq_len, generator)  # noqa: E731
        device = next(model.parameters()).device

        def loss_fn(m: torch.nn.Module, pair: tuple) -> torch.Tensor:
            inputs, targets = (t.to(device) for t in pair)
            return task_loss(m(inputs), targets)

        try:
            found.append(gradient_noise_scale(model, loss_fn, [(batch(small), batch(big)) for _ in range(NOISE_PAIRS)],
                                              small, big))
        except NoiseScaleError:
            pass

    train(ctx.spec, ctx.scheme, ctx.data, hp, ctx.settings, ctx.optim, width=size, on_end=measure)
    return found[0] if found else None


def _plot(axis: str, fit: OptimumFit, basins: list[Basin], proxy: Setting, target: Setting, tuned_lr: float,
          path: Path) -> None:
    """The fit points with their errors, the rule's line through the grid's optimum at the proxy, and the LR the
    transfer actually moves (the search's, which the grid's optimum need not equal) at both ends."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    xs = [math.log2(x) for x in fit.settings]
    ax.errorbar(xs, [b.log2 for b in basins], yerr=[b.se for b in basins], fmt="o",
                label="proxy's optimum (basin of the LR grid, +- 1 se)")
    x_target = math.log2(target.tokens if axis == "horizon" else target.batch_size)
    line = [min(xs) + (max(max(xs), x_target) - min(xs)) * i / 40 for i in range(41)]
    anchor = proxy.tokens if axis == "horizon" else proxy.batch_size  # the rule moves the proxy's own optimum
    anchor_y = math.log2(fit.optima[fit.settings.index(anchor)]) if anchor in fit.settings else None
    if anchor_y is None:
        anchor_y = fit.intercept + fit.slope * fit.coordinate(anchor)
    ax.plot(line, [anchor_y + fit.slope * (fit.coordinate(2.0**x) - fit.coordinate(anchor)) for x in line], "-", lw=1,
            label=f"rule from the proxy's optimum: slope {fit.slope:.2f} [{fit.slope_interval[0]:.2f}, "
                  f"{fit.slope_interval[1]:.2f}]")
    moved = math.log2(tuned_lr) + fit.slope * (fit.coordinate(2.0**x_target) - fit.coordinate(anchor))
    ax.plot([math.log2(anchor), x_target], [math.log2(tuned_lr), moved], "s--", color="C2", lw=1, ms=5,
            label=f"the tuned LR, moved along this axis: {tuned_lr:.3g} -> {2.0**moved:.3g}")
    ax.axvline(x_target, ls=":", color="gray", label="the target's setting")
    ax.set_xlabel("log2 " + ("training tokens" if axis == "horizon" else "batch size"))
    ax.set_ylabel("log2 optimal LR")
    ax.set_title(f"how the LR optimum moves with the {axis} (extrapolated to the target)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
