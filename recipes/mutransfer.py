"""The whole pipeline: coordinate check, proxy sweep, pick, transfer, target run, report.

    python recipes/mutransfer.py                                    # built-in default (CPU: about 5 minutes)
    python recipes/mutransfer.py experiment=smoke hydra.run.dir=out  # under 2 minutes
    python recipes/mutransfer.py experiment=depth_resmlp            # depth transfer with CompleteP
    python recipes/mutransfer.py sweep=lr_grid                      # tune the LR alone, on a grid
    python recipes/mutransfer.py target_check.enabled=true          # also a small direct sweep at the target
    python recipes/mutransfer.py axes.target_steps=2400 axes.horizons=[0.25,0.5,1.0]   # an 8x longer target

Writes report.md with the pictures (coord_check.png, lr_sweep.png, target_loss.png), trials.csv, tune.json,
transfer.json and metrics.jsonl into the run dir (printed at start). Interrupted, the same command goes on with
the unfinished run: finished trials are kept, the target restarts from its last checkpoint (``resume=false``
starts afresh). Exit codes (hptransfer.pipeline.cli): 0 done, 1 the target diverged, 3 a configuration mistake
(one line naming the setting), 4 an internal error.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import hydra
from omegaconf import DictConfig

from hptransfer.pipeline.axes import run_axes
from hptransfer.pipeline.cli import EXIT_FAIL, entry, guarded
from hptransfer.pipeline.config import register_configs
from hptransfer.pipeline.console import maybe_wandb, progress_printer, run_dir, run_dir_given, training_bar
from hptransfer.pipeline.rundir import open_run_dir
from hptransfer.pipeline.stages import (chosen_hparams, prepare, report, run_coord_check, run_target, run_target_check,
                                       run_tune)

register_configs()


@hydra.main(config_path="../conf", config_name="mutransfer", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> float:
    ctx = prepare(cfg)
    run = open_run_dir(run_dir(), cfg, explicit=run_dir_given())
    directory = run.path
    ctx.settings.resume = ctx.settings.resume or cfg.resume  # the target goes on from its own last checkpoint
    coord = None
    if cfg.coord_check.enabled:
        with maybe_wandb(cfg, "coord_check", directory) as wandb_run:
            coord = run_coord_check(ctx, directory)
            if wandb_run is not None:
                wandb_run.summary["coord_check/ok"] = coord.ok
                wandb_run.summary["coord_check/verdict"] = coord.verdict
        print(coord.summary(4))
    total = len(cfg.proxy.sizes) * (ctx.sweep.n_trials if ctx.sweep.is_search() else len(ctx.sweep.grid()))
    with maybe_wandb(cfg, "proxy", directory) as wandb_run:
        summary = run_tune(ctx, directory, progress_printer(total, "proxy sweep"), wandb_run)
    hp, source = chosen_hparams(ctx, summary)
    moved = run_axes(ctx, directory, hp, summary["storage"], progress_printer(0, "horizon and batch sweeps"))
    target = ctx
    if moved is not None:  # the target trains for other steps or with another batch: hptransfer.transfer's values
        target = replace(ctx, settings=moved.settings, optim=replace(ctx.optim, weight_decay=moved.weight_decay))
        hp, source = moved.hp, f"{source}, moved to the target's steps and batch by hptransfer.transfer (axes.json)"
    print(f"target: lr {hp.lr:.4g} from {source}", flush=True)
    with maybe_wandb(cfg, "target", directory) as wandb_run:
        result = run_target(target, directory, hp, source, wandb_run, training_bar(target.settings.steps))
    check = run_target_check(target, directory, hp, result, print) if cfg.target_check.enabled else None
    path = report(target, directory, tune_summary=summary, target=result, coord=coord, source=source, hp=hp,
                  target_check=check)
    run.finish()
    print(f"report: {path}")
    if result.diverged:
        print(f"the target diverged: {result.reason}", file=sys.stderr)
        sys.exit(EXIT_FAIL)
    return result.val_loss


if __name__ == "__main__":
    entry(main)
