"""The scaling recipe's stages: train a ladder with one set of hyperparameters, fit, predict, verify, plot."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..pipeline.stages import Context
from ..pipeline.report import _pyplot
from .fit import drop_early, fit_power_law, width_limit
from ..pipeline.train import HParams, train
from ..pipeline.tune import write_json


def _params(ctx: Context, size: int) -> int:
    model = ctx.spec.build(**ctx.size_kwargs(size), device="meta")
    return sum(p.numel() for p in model.parameters())


def run_scaling(ctx: Context, run_dir: Path, hp: HParams, source: str,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    cfg = ctx.cfg.ladder
    target = ctx.spec.width if ctx.axis == "width" else ctx.spec.depth
    sizes = sorted(cfg.sizes)
    eval_every = max(1, ctx.settings.steps // cfg.eval_points)
    settings = replace(ctx.settings, eval_every=eval_every)
    curves, finals = {}, {}
    for size in sizes + [None]:
        kwargs = ctx.size_kwargs(size) if size is not None else {}
        result = train(ctx.spec, ctx.scheme, ctx.data, hp, settings, ctx.optim, **kwargs)
        label = size if size is not None else target
        finals[label] = result.val_loss
        curves[label] = [(r["step"], r["val_loss"]) for r in result.curve if "val_loss" in r]
        if progress:
            progress(f"{ctx.axis} {label}: val loss {result.val_loss:.4f}" + (" (target)" if size is None else ""))
        if size is None:
            break
        if size == sizes[-1]:
            # predict the target before it is trained
            N = np.array([_params(ctx, s) for s in sizes], dtype=float)
            losses = np.array([finals[s] for s in sizes])
            fit = fit_power_law(N, losses)
            target_params = _params(ctx, target)
            predicted = float(fit.predict(target_params))
            low_high = _interval(fit, target_params)
    actual = finals[target]
    summary = {"scheme": ctx.scheme, "axis": ctx.axis, "lr": hp.lr, "hparams_from": source,
               "ladder": {str(s): {"params": _params(ctx, s), "val_loss": finals[s]} for s in sizes},
               "fit": {"E": fit.E, "A": fit.A, "alpha": fit.alpha, "intervals": fit.intervals,
                       "holdout": fit.holdout},
               "prediction": {"target": target, "params": target_params, "predicted": predicted,
                              "interval": low_high, "actual": actual,
                              "abs_rel_error": abs(predicted - actual) / actual if math.isfinite(actual) else None}}
    steps = [s for s, _ in curves[sizes[0]]]
    if all(len(curves[s]) == len(steps) for s in sizes) and len(steps) >= 2:
        kept = drop_early(steps, np.array([[v for _, v in curves[s]] for s in sizes]).T, fraction=cfg.drop_early_fraction)
        limit = width_limit(sizes, kept[0].tolist(), kept[1].T.tolist())
        summary["width_limit"] = {"steps": limit.steps, "limit": limit.limit, "rates": limit.rates,
                                  "wider_is_better": limit.wider_is_better}
        _plot_limit(sizes, kept[0], kept[1].T, limit, run_dir / "width_limit.png")
    write_json(run_dir / "scaling.json", summary)
    _plot_fit([_params(ctx, s) for s in sizes], [finals[s] for s in sizes], fit, target_params, actual,
              run_dir / "scaling_fit.png")
    _write_report(run_dir, summary)
    return summary


def _interval(fit: Any, x: float) -> list[float]:
    low, high = fit.predict_interval(x)
    return [float(low), float(high)]


def _plot_fit(params: list[int], losses: list[float], fit: Any, target_params: int, actual: float,
              path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    xs = np.logspace(np.log10(min(params)) - 0.1, np.log10(target_params) + 0.2, 100)
    ax.plot(xs, fit.predict(xs), "-", color="C0", label=f"fit: {fit.E:.3f} + {fit.A:.3g} N^-{fit.alpha:.3f}")
    low, high = fit.predict_interval(xs)
    ax.fill_between(xs, low, high, color="C0", alpha=0.15, label="bootstrap 10-90% band")
    ax.plot(params, losses, "o", color="C0", label="ladder (fitted)")
    if fit.holdout:
        ax.plot([fit.holdout["size"]], [fit.holdout["predicted"]], "s", mfc="none", color="C2",
                label=f"leave-largest-out prediction ({100 * fit.holdout['abs_rel_error']:.1f}% off)")
    ax.plot([target_params], [fit.predict(target_params)], "*", ms=12, color="C1", label="predicted target")
    ax.plot([target_params], [actual], "x", ms=10, color="C3", label="measured target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    shown = [*losses, actual, float(fit.predict(target_params))]
    span = max(shown) - min(shown)
    ax.set_ylim(min(shown) - 0.5 * span - 1e-3, max(shown) + 0.5 * span + 1e-3)  # a wild bootstrap band must not hide the data
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final validation loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_limit(sizes: list[int], steps: np.ndarray, curves: np.ndarray, limit: Any, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    for size, curve in zip(sizes, curves):
        ax.plot(steps, curve, "-o", ms=3, label=f"width {size}")
    ax.plot(steps, limit.limit, "k--", label="infinite-width extrapolation")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title("approach to the infinite-width limit: " +
                 ", ".join(f"{k} ~ width^-{v:.2f}" for k, v in limit.rates.items()), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_report(run_dir: Path, summary: dict[str, Any]) -> None:
    pred = summary["prediction"]
    lines = ["# Scaling-law prediction", "",
             f"Ladder of {len(summary['ladder'])} {summary['axis']}s trained at lr {summary['lr']:.4g} "
             f"({summary['hparams_from']}), scheme {summary['scheme']}.", "",
             f"Fit: loss = {summary['fit']['E']:.4f} + {summary['fit']['A']:.4g} N^-{summary['fit']['alpha']:.4f}.",
             f"Leave-largest-out check: {summary['fit']['holdout']}.", "",
             f"Target ({summary['axis']} {pred['target']}, {pred['params']} parameters): predicted "
             f"{pred['predicted']:.4f} (interval {pred['interval']}), measured {pred['actual']:.4f}, "
             f"error **{100 * pred['abs_rel_error']:.2f}%**.", "", "![fit](scaling_fit.png)", ""]
    if "width_limit" in summary:
        lines += [f"Approach to the infinite-width limit (median rate per window): {summary['width_limit']['rates']}; "
                  f"wider is better at every logged step: {all(summary['width_limit']['wider_is_better'])}.", "",
                  "![width limit](width_limit.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
