"""Tune the proxy: an LR grid (or a TPE search) at every proxy size, over an Optuna ledger.

    python recipes/tune.py experiment=smoke
    python recipes/tune.py proxy.sizes=[64,128,256] sweep.log2_lr_step=0.5
    python recipes/tune.py sweep.storage=postgresql://user@host/db      # many workers, one sweep

Writes trials.csv, lr_sweep.png and tune.json (the chosen LR) into the run dir (printed at start). Running the
same command again finishes a killed sweep without repeating finished trials (``resume=false``: a new sweep).
Exit codes: 0 done, 3 a configuration mistake, 4 an internal error (hptransfer.pipeline.cli).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hptransfer.pipeline.cli import entry, guarded
from hptransfer.pipeline.config import register_configs
from hptransfer.pipeline.stages import prepare, run_tune

from hptransfer.pipeline.console import maybe_wandb, progress_printer, run_dir, run_dir_given
from hptransfer.pipeline.rundir import open_run_dir

register_configs()


@hydra.main(config_path="../conf", config_name="tune", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> float:
    ctx = prepare(cfg)
    run = open_run_dir(run_dir(), cfg, explicit=run_dir_given())
    directory = run.path
    total = len(cfg.proxy.sizes) * (ctx.sweep.n_trials if ctx.sweep.is_search() else len(ctx.sweep.grid()))
    with maybe_wandb(cfg, "proxy", directory) as wandb_run:
        summary = run_tune(ctx, directory, progress_printer(total, "proxy sweep"), wandb_run)
    run.finish()
    print(f"chosen lr {summary['chosen']['lr']:.4g} (log2 {summary['chosen']['log2_lr']:.2f}); optimum moved "
          f"{summary['shift_octaves']:.2f} octaves across proxy sizes; files in {directory}")
    return summary["chosen"]["lr"]


if __name__ == "__main__":
    entry(main)
