"""The proxy -> transfer -> target pipeline as functions: the recipes are thin Hydra shells around these.

Data flows one way: config -> Context (data, model spec, settings) -> proxy sweep (Optuna ledger) -> chosen
hyperparameters (tune.json) -> target run (transfer.json, metrics.jsonl) -> report.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from ..verify.coord import CoordCheckResult, coord_check
from ..data import load_data
from ..data.datasets import Classification, TokenStream
from ..errors import HptError
from ..models.registry import LANGUAGE_MODELS, ModelSpec, UnknownModelError, resolve_family
from . import checkpoint as ckpt, faults
from .axes import check_axes
from .checks import check_numbers, check_storage
from .report import plot_curve, plot_lr_sweep, write_report
from ..rules import SCHEMES
from .train import HParams, OptimSettings, TrainResult, TrainSettings, train
from .tune import (Optimum, SweepSettings, optimum_shift, run_sweep, trial_rows, with_values, write_json,
                   write_trials_csv)

log = logging.getLogger(__name__)


class PipelineError(HptError, ValueError):
    """A pipeline configuration that cannot work (unknown names, a base larger than the target, ...)."""


@dataclass
class Context:
    cfg: DictConfig
    data: TokenStream | Classification
    spec: ModelSpec
    hp: HParams
    settings: TrainSettings
    optim: OptimSettings
    sweep: SweepSettings

    @property
    def scheme(self) -> str:
        return self.cfg.scheme.name

    @property
    def axis(self) -> str:
        return self.cfg.proxy.axis

    def size_kwargs(self, size: int) -> dict[str, int]:
        return {"width": size} if self.axis == "width" else {"depth": size}


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def prepare(cfg: DictConfig) -> Context:
    """Check the configuration and load the data; every error names the setting to change."""
    check_numbers(cfg, PipelineError)
    model = cfg.model
    try:
        resolve_family(model.family)
    except UnknownModelError as err:
        raise PipelineError(str(err)) from None
    if cfg.scheme.name not in SCHEMES:
        raise PipelineError(f"scheme.name={cfg.scheme.name!r} is unknown; choose one of {sorted(SCHEMES)}")
    if model.base_width > model.width or model.base_depth > model.depth:
        raise PipelineError(f"the base (width {model.base_width}, depth {model.base_depth}) is larger than the target "
                            f"(width {model.width}, depth {model.depth}); set model.base_width/base_depth to the "
                            "proxy's size or below")
    target_size = model.width if cfg.proxy.axis == "width" else model.depth
    too_big = [s for s in cfg.proxy.sizes if s > target_size]
    if too_big:
        raise PipelineError(f"proxy sizes {too_big} exceed the target's {cfg.proxy.axis} ({target_size}); a proxy "
                            "must be smaller than the target")
    data = load_data(cfg.data)
    if model.family in LANGUAGE_MODELS and data.task != "lm":
        raise PipelineError("model=gpt needs a token dataset (data=text or data=tokens)")
    if model.family in ("resmlp", "mlp", "resnet") and data.task != "classification":
        raise PipelineError(f"model={model.family} needs a classification dataset (data=synthetic or data=digits)")
    lengths = {"train.seq_len": cfg.train.seq_len}
    if cfg.get("coord_check") is not None and cfg.coord_check.enabled:
        lengths["coord_check.seq_len"] = cfg.coord_check.seq_len
    for key, length in lengths.items():
        data.check_fits(length, key)
    options = {**OmegaConf.to_container(model.options, resolve=True), **data.model_options}
    if model.family in LANGUAGE_MODELS:
        for key, length in lengths.items():
            if length > options.get("block_size", 64):
                raise PipelineError(f"{key}={length} exceeds model.options.block_size="
                                    f"{options.get('block_size', 64)}; lower it or raise the block size")
    spec = ModelSpec(model.family, model.width, model.depth, model.base_width, model.base_depth, options,
                     OmegaConf.to_container(model.get("parametrize", {}), resolve=True))
    multipliers = OmegaConf.to_container(cfg.scheme.multipliers)
    hp = HParams(lr=cfg.optim.lr, warmup_frac=cfg.optim.warmup_frac, init=cfg.scheme.init, multipliers=multipliers)
    settings = TrainSettings(**OmegaConf.to_container(cfg.train))
    optim = OptimSettings(name=cfg.optim.name, weight_decay=cfg.optim.weight_decay,
                          betas=tuple(cfg.optim.get("betas", (0.9, 0.95))), eps=cfg.optim.get("eps", 1e-8),
                          momentum=cfg.optim.get("momentum", 0.9),
                          independent_weight_decay=cfg.optim.get("independent_weight_decay", False),
                          adjust_lr_fn=cfg.optim.get("adjust_lr_fn", "original"))
    sweep = SweepSettings(**OmegaConf.to_container(cfg.sweep))
    if sweep.is_search():  # a bad space or ledger fails here, before any ledger is made
        sweep.check_space()
    else:
        sweep.grid()
    if sweep.storage:
        check_storage(sweep.storage, PipelineError)
    check_axes(cfg, PipelineError)
    return Context(cfg, data, spec, hp, settings, optim, sweep)


# ---- stages -----------------------------------------------------------------------------------------
def run_coord_check(ctx: Context, run_dir: Path) -> CoordCheckResult:
    stage = ctx.cfg.coord_check
    # a small probe batch from the training data itself (mu-P needs width >> tokens per step)
    data = ctx.data.batch("train", stage.batch_size, stage.seq_len, torch.Generator().manual_seed(0))
    result = coord_check(lambda size: ctx.spec.parametrized(ctx.scheme, **ctx.size_kwargs(size),
                                                            multipliers=ctx.hp.multipliers or None),
                         list(stage.sizes), axis=ctx.axis, data=data, lr=stage.lr, steps=stage.steps,
                         seeds=stage.seeds)
    result.plot(run_dir / "coord_check.png")
    result.to_json(run_dir / "coord_check.json")
    return result


def fingerprint(ctx: Context) -> dict[str, Any]:
    """What makes two sweeps the same experiment (compared against the ledger before it is reused)."""
    cfg = ctx.cfg
    return {"model": OmegaConf.to_container(cfg.model), "scheme": OmegaConf.to_container(cfg.scheme),
            "data": OmegaConf.to_container(cfg.data), "train": {k: v for k, v in asdict(ctx.settings).items()
                                                                if k not in ("resume", "device", "checkpoint_every")},
            "optim": OmegaConf.to_container(cfg.optim), "axis": ctx.axis}


def run_tune(ctx: Context, run_dir: Path, progress: Callable[[str], None] | None = None,
             wandb_run: Any = None) -> dict[str, Any]:
    """Sweep every proxy size (resuming a killed sweep), write trials.csv, lr_sweep.png and tune.json."""
    storage = ctx.sweep.storage or f"sqlite:///{(run_dir / 'trials.db').resolve()}"

    def objective(size: int, hp: HParams) -> TrainResult:
        faults.point("trial")
        return train(ctx.spec, ctx.scheme, ctx.data, hp, ctx.settings, ctx.optim, **ctx.size_kwargs(size))

    sizes = sorted(ctx.cfg.proxy.sizes)
    optima = run_sweep(objective, sizes, ctx.hp, ctx.sweep, storage, fingerprint(ctx), progress)
    rows = trial_rows(storage, ctx.sweep, sizes)
    write_trials_csv(rows, run_dir / "trials.csv")
    plot_lr_sweep(rows, optima, run_dir / "lr_sweep.png", ctx.axis,
                  f"{ctx.spec.family}, {ctx.scheme}: loss vs LR per proxy {ctx.axis}")
    chosen = max(optima, key=lambda o: o.size)
    summary = {"scheme": ctx.scheme, "axis": ctx.axis, "storage": storage,
               "optima": [asdict(o) | {"lr": o.lr} for o in optima], "shift_octaves": optimum_shift(optima),
               "chosen": {"lr": chosen.lr, "log2_lr": chosen.log2_lr, "size": chosen.size, "params": chosen.params}}
    write_json(run_dir / "tune.json", summary)
    if wandb_run is not None:
        _log_sweep_to_wandb(wandb_run, rows, run_dir / "lr_sweep.png", summary)
    return summary


def chosen_hparams(ctx: Context, tune_summary: dict[str, Any] | None) -> tuple[HParams, str]:
    """The hyperparameters for the target and where they came from."""
    hp = HParams(lr=ctx.hp.lr, warmup_frac=ctx.hp.warmup_frac, init=ctx.hp.init, grad_clip=ctx.hp.grad_clip,
                 multipliers=dict(ctx.hp.multipliers))
    if tune_summary is not None:
        chosen = tune_summary["chosen"]
        params = chosen.get("params", {})
        hp = with_values(hp, {**params, "lr": chosen["lr"]})
        how = "the best trial of the search" if params else "the interpolated optimum"
        return hp, f"{how} at proxy {ctx.axis} {chosen['size']}"
    if ctx.cfg.lr is not None:
        hp.lr = ctx.cfg.lr
        return hp, "lr= given on the command line"
    return hp, "optim.lr (nothing was tuned)"


def load_tune(tune_dir: str) -> dict[str, Any]:
    path = Path(tune_dir).expanduser() / "tune.json"
    if not path.is_file():
        raise PipelineError(f"tune_dir={tune_dir!r} has no tune.json; point it at a finished recipes/tune.py run dir")
    return json.loads(path.read_text())


def run_target(ctx: Context, run_dir: Path, hp: HParams, source: str, wandb_run: Any = None,
               progress: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train the target with the chosen hyperparameters; writes transfer.json, metrics.jsonl, target_loss.png.

    metrics.jsonl has one row per step: a run that resumes from a checkpoint keeps the rows before it, and the
    rows it trains again (bit-identical on CPU) are merged by step when it ends."""
    path = run_dir / "metrics.jsonl"
    sharded = ckpt.is_sharded(ctx.settings.parallel, int(os.environ.get("WORLD_SIZE", 1)))
    resuming = ctx.settings.resume and ckpt.exists(ckpt.location(run_dir, sharded), sharded)
    metrics = path.open("a" if resuming else "w") if is_rank_zero() else None

    def on_metrics(row: dict[str, float]) -> None:
        if metrics is not None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            faults.point("target_step")
        if wandb_run is not None:
            wandb_run.log({f"target/{k}": v for k, v in row.items() if k != "step"}, step=int(row["step"]))
        if progress is not None:
            progress(row)

    try:
        result = train(ctx.spec, ctx.scheme, ctx.data, hp, ctx.settings, ctx.optim, run_dir=run_dir,
                       on_metrics=on_metrics)
    finally:
        if metrics is not None:
            metrics.close()
    if is_rank_zero():
        merge_metrics(path)
        write_json(run_dir / "transfer.json", {
            "lr": hp.lr, "log2_lr": math.log2(hp.lr), "warmup_frac": hp.warmup_frac, "init": hp.init,
            "grad_clip": ctx.settings.grad_clip if hp.grad_clip is None else hp.grad_clip,
            "multipliers": hp.multipliers, "source": source, "scheme": ctx.scheme,
            "target": {"family": ctx.spec.family, "width": ctx.spec.width, "depth": ctx.spec.depth},
            "base": {"width": ctx.spec.base_width, "depth": ctx.spec.base_depth},
            "result": {"val_loss": result.val_loss, "train_loss": result.train_loss, "diverged": result.diverged,
                       "reason": result.reason, "seconds": result.seconds, "tokens": result.tokens,
                       "train_losses": [row["train_loss"] for row in result.curve if "val_loss" not in row]}})
        if result.curve:
            plot_curve(result.curve, run_dir / "target_loss.png",
                       f"target {ctx.spec.family} w{ctx.spec.width} d{ctx.spec.depth}, lr {hp.lr:.3g}")
    return result


def merge_metrics(path: Path) -> Path:
    """Rewrite a metrics.jsonl with one row per step (later rows update earlier ones: the final evaluation joins
    its step's row, a step trained again after a resume replaces its first copy); a line cut short by a kill is
    dropped."""
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows.setdefault(int(row["step"]), {}).update(row)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(rows[step]) + "\n" for step in sorted(rows)))
    tmp.replace(path)
    return path


def run_target_check(ctx: Context, run_dir: Path, hp: HParams, target: TrainResult,
                     progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train the target at the transferred LR x 2^octave for each of ``target_check.octaves`` (the other
    hyperparameters as transferred); with the target run itself, a small direct sweep at the target. Each point
    is recorded in target_check.json as it finishes, and a rerun skips the points already there."""
    path = run_dir / "target_check.json"
    done = {row["octave"]: row for row in (json.loads(path.read_text())["points"] if path.is_file() else [])}
    done[0.0] = {"octave": 0.0, "lr": hp.lr, "val_loss": None if target.diverged else target.val_loss,
                 "diverged": target.diverged}
    for octave in sorted(float(o) for o in ctx.cfg.target_check.octaves):
        if octave in done:
            continue
        trial = replace(hp, lr=hp.lr * 2.0**octave)
        result = train(ctx.spec, ctx.scheme, ctx.data, trial, ctx.settings, ctx.optim)
        done[octave] = {"octave": octave, "lr": trial.lr, "val_loss": None if result.diverged else result.val_loss,
                        "diverged": result.diverged}
        if is_rank_zero():
            write_json(path, {"points": sorted(done.values(), key=lambda r: r["octave"])})
        if progress:
            progress(f"target at lr x 2^{octave:+g}: " + ("diverged" if result.diverged else f"{result.val_loss:.4f}"))
    points = sorted(done.values(), key=lambda r: r["octave"])
    if is_rank_zero():
        write_json(path, {"points": points})
    return points


def _log_sweep_to_wandb(run: Any, rows: list[dict[str, Any]], picture: Path, summary: dict[str, Any]) -> None:
    import wandb

    sizes = sorted({r["size"] for r in rows})
    grid = sorted({r["log2_lr"] for r in rows if r["log2_lr"] is not None})
    ys = []
    for size in sizes:
        by_lr = {r["log2_lr"]: r["val_loss"] for r in rows if r["size"] == size and r["state"] == "COMPLETE"}
        ys.append([by_lr.get(x, float("nan")) for x in grid])
    run.log({"proxy/lr_vs_loss": wandb.plot.line_series(xs=grid, ys=ys, keys=[f"size {s}" for s in sizes],
                                                        title="loss vs log2 LR", xname="log2 lr"),
             "proxy/lr_sweep": wandb.Image(str(picture))})
    run.summary["proxy/chosen_lr"] = summary["chosen"]["lr"]
    run.summary["proxy/shift_octaves"] = summary["shift_octaves"]


def report(ctx: Context, run_dir: Path, *, tune_summary: dict[str, Any] | None, target: TrainResult | None,
           coord: CoordCheckResult | None, source: str, hp: HParams | None,
           target_check: list[dict[str, Any]] | None = None) -> Path:
    optima = [Optimum(**{k: v for k, v in o.items() if k != "lr"}) for o in (tune_summary or {}).get("optima", [])]
    pictures = {name: file for name, file in (("coord", "coord_check.png"), ("sweep", "lr_sweep.png"),
                                              ("target", "target_loss.png")) if (run_dir / file).exists()}
    baseline = None
    if optima and target is not None:
        best = max(optima, key=lambda o: o.size)
        baseline = {"proxy_loss": best.loss, "proxy_size": best.size}
    transfer = None
    if hp is not None:
        searched = {k: v for k, v in ((tune_summary or {}).get("chosen") or {}).get("params", {}).items() if k != "lr"}
        transfer = {"lr": hp.lr, "log2_lr": math.log2(hp.lr), "source": source, "searched": searched}
    faults.point("report")
    axes_file = run_dir / "axes.json"
    axes = json.loads(axes_file.read_text()) if axes_file.is_file() else None
    return write_report(run_dir, title=f"μTransfer report: {ctx.cfg.name}", scheme=ctx.scheme, axis=ctx.axis,
                        optima=optima, shift=optimum_shift(optima), transfer=transfer, target=target, coord=coord,
                        pictures=pictures, baseline=baseline, target_check=target_check, axes=axes)
