"""Plots and report.md for the recipes: the LR-vs-loss picture, the target's loss curve, and a page tying them
together with the chosen hyperparameters and where they came from."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lr_sweep(rows: list[dict[str, Any]], optima: list[Any], path: Path, axis: str, title: str = "") -> Path:
    """Validation loss against log2 LR, one curve per proxy size, interpolated optima marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = sorted({r["size"] for r in rows})
    searched = any(k.startswith("param_") and k != "param_log2_lr" for r in rows for k in r)
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, max(len(sizes), 2)))
    for color, size in zip(colors, sizes):
        points = sorted((r["log2_lr"], r["val_loss"]) for r in rows if r["size"] == size and r["state"] == "COMPLETE"
                        and r["val_loss"] is not None)
        failed = [r["log2_lr"] for r in rows if r["size"] == size and r["state"] == "FAIL" and r["log2_lr"] is not None]
        if points:  # a search's trials vary other values too: points, not a curve
            ax.plot([p[0] for p in points], [p[1] for p in points], "o" if searched else "-o", ms=3, color=color,
                    label=f"{axis} {size}")
        if failed:
            top = max((p[1] for p in points), default=1.0)
            ax.plot(failed, [top] * len(failed), "x", color=color, ms=7)
    for color, opt in zip(colors, sorted(optima, key=lambda o: o.size)):
        ax.axvline(opt.log2_lr, color=color, ls=":", lw=1)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel("validation loss")
    ax.set_title(title or ("search: each trial's loss against its LR" if searched else "LR sweep"), fontsize=10)
    # the markers' key is in the legend, so a recipe's own title never loses it
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    if optima:
        handles.append(Line2D([], [], color="gray", ls=":", lw=1,
                              label="best trial's LR" if searched else "interpolated optimum"))
    if any(r["state"] == "FAIL" and r["log2_lr"] is not None for r in rows):
        handles.append(Line2D([], [], color="gray", marker="x", ls="", ms=7, label="diverged"))
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curve(curve: list[dict[str, float]], path: Path, title: str) -> Path:
    """Training (and validation) loss against step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot([r["step"] for r in curve], [r["train_loss"] for r in curve], lw=1, label="train")
    val = [(r["step"], r["val_loss"]) for r in curve if "val_loss" in r]
    if val:
        ax.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(value: float) -> str:
    return "diverged" if value is None or not math.isfinite(value) else f"{value:.4f}"


def write_report(run_dir: Path, *, title: str, scheme: str, axis: str, optima: list[Any], shift: float,
                 transfer: dict[str, Any] | None, target: Any | None, coord: Any | None, pictures: dict[str, str],
                 axes: dict[str, Any] | None = None,
                 baseline: dict[str, Any] | None = None, target_check: list[dict[str, Any]] | None = None) -> Path:
    """report.md: coordinate check verdict, proxy sweep with optimum per size, the transfer and the target."""
    lines = [f"# {title}", "", f"Scheme **{scheme}**, proxies along **{axis}**.", ""]
    if coord is not None:
        lines += ["## Coordinate check", "", f"Verdict: **{coord.verdict}** "
                  f"({len(coord.failures)} of {len(coord.slopes)} slopes outside their band)."
                  + (f" {coord.reason}" if coord.reason else ""), ""]
        if "coord" in pictures:
            lines += [f"![coordinate check]({pictures['coord']})", ""]
    searched = sorted({k for opt in optima for k in opt.params if k != "lr"})
    if searched:  # the multi-hyperparameter search: the best trial's values per proxy size
        lines += ["## Proxy search", "", f"| proxy {axis} | best log2 LR | " + " | ".join(searched) + " | best val loss |",
                  "|---|---|" + "---|" * len(searched) + "---|"]
        for opt in sorted(optima, key=lambda o: o.size):
            lines.append(f"| {opt.size} | {opt.log2_lr:.2f} | " + " | ".join(f"{opt.params.get(k, float('nan')):.3g}"
                                                                         for k in searched) + f" | {_fmt(opt.loss)} |")
        lines += ["", f"The best trial's LR differs by **{shift:.2f} octaves** across proxy sizes (a search's best "
                  "trial is noisier than a grid's interpolated optimum).", ""]
    else:
        lines += ["## Proxy sweep", "", f"| proxy {axis} | optimal log2 LR (interpolated) | grid point | best val loss | note |",
                  "|---|---|---|---|---|"]
        for opt in sorted(optima, key=lambda o: o.size):
            note = "optimum on the grid edge: widen the grid" if opt.at_edge else ""
            lines.append(f"| {opt.size} | {opt.log2_lr:.2f} | {opt.grid_log2_lr:g} | {_fmt(opt.loss)} | {note} |")
        lines += ["", f"The optimum moved **{shift:.2f} octaves** across proxy sizes "
                  f"({'within' if shift <= 0.5 else 'more than'} the 0.5-octave transfer target).", ""]
    if "sweep" in pictures:
        lines += [f"![LR sweep]({pictures['sweep']})", ""]
    if axes:
        lines += _axes_lines(axes)
    if transfer is not None:
        others = "".join(f", {k} = {v:.4g}" for k, v in sorted(transfer.get("searched", {}).items()))
        lines += ["## Transfer", "", f"Chosen hyperparameters: lr = {transfer['lr']:.4g} (log2 {transfer['log2_lr']:.2f})"
                  f"{others}, from {transfer['source']}.", ""]
    if target is not None:
        status = f"diverged ({target.reason})" if target.diverged else f"final validation loss **{_fmt(target.val_loss)}**"
        lines += ["## Target", "", f"Target run: {status}, {target.seconds:.1f} s, {target.tokens} tokens.", ""]
        if baseline:
            lines += [f"Best proxy loss was {_fmt(baseline['proxy_loss'])} at {axis} {baseline['proxy_size']}; "
                      f"the target is {'better' if target.val_loss < baseline['proxy_loss'] else 'not better'} "
                      "(μP predicts wider is better at the same hyperparameters).", ""]
        if target_check:
            lines += _target_check_lines(target_check)
        if "target" in pictures:
            lines += [f"![target loss]({pictures['target']})", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _axes_lines(axes: dict[str, Any]) -> list[str]:
    """The horizon and batch rules: each fit, and what moved (axes.json)."""
    proxy, target = axes["proxy"], axes["target"]
    seeds = axes.get("seeds") or []
    lines = ["## Beyond width: the target's steps and batch", "",
             f"The proxy trained {proxy['steps']} steps of {proxy['batch_size']}; the target trains {target['steps']} "
             f"of {target['batch_size']}. Each optimum is a basin fit over {len(seeds) or 1} seed(s), "
             "+- its standard error.", "",
             "| axis | fitted slope of log2 LR* (95% interval) | log2 optimum at each point |", "|---|---|---|"]
    for axis, fit in axes["fits"].items():
        low, high = fit["slope_interval"]
        points = ", ".join(f"{b['log2']:.2f} +- {b['se']:.2f}" + (" (grid edge)" if b["at_edge"] else "")
                           for b in axes.get("basins", {}).get(axis, [])) or str(len(fit["settings"]))
        lines.append(f"| {axis} | {fit['slope']:.2f} [{low:.2f}, {high:.2f}] | {points} |")
    lines += ["", "| hyperparameter | proxy | target | rules |", "|---|---|---|---|"]
    for name, moved in axes["transfer"].items():
        lines.append(f"| {name} | {moved['proxy']:.4g} | {moved['target']:.4g} | {', '.join(moved['rules']) or '-'} |")
    notes = [f"- {name}: {note}" for name, moved in axes["transfer"].items() for note in moved.get("notes", [])]
    lines += [""] + notes if notes else []
    for axis in axes["fits"]:
        lines += ["", f"![{axis}](axes_{axis}.png)"]
    return lines + [""]


def _target_check_lines(points: list[dict[str, Any]]) -> list[str]:
    """The small direct sweep at the target: is the transferred LR (octave 0) its best point?"""
    lines = ["### A small direct sweep at the target", "", "| LR | log2 LR | final validation loss |", "|---|---|---|"]
    for row in points:
        label = "transferred" if row["octave"] == 0 else f"transferred x 2^{row['octave']:+g}"
        lines.append(f"| {label} | {math.log2(row['lr']):.2f} | {_fmt(row['val_loss'])} |")
    finite = [r for r in points if r["val_loss"] is not None and math.isfinite(r["val_loss"])]
    if finite:
        best = min(finite, key=lambda r: r["val_loss"])
        if best["octave"] == 0:
            verdict = "The transferred LR is the best of these points: the transfer held at the target."
        else:
            verdict = (f"The target did better at the transferred LR x 2^{best['octave']:+g}: the transfer missed its "
                       "optimum by about that much (widen target_check.octaves to bracket it).")
        lines += ["", verdict]
    return lines + [""]
