"""Scaling law from a width ladder trained with transferred hyperparameters: fit, predict the target, check.

    python recipes/scaling.py                          # built-in text, widths 32..128 -> predict width 256
    python recipes/scaling.py tune_dir=outputs/tune/... ladder.sizes=[64,96,128,192,256] model.width=1024

Writes scaling.json (fit, intervals, held-out check, prediction and its error), scaling_fit.png (loss vs
parameters with the fit, its interval, the held-out and the target points), width_limit.png and report.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hptransfer.pipeline.cli import entry, guarded
from hptransfer.pipeline.config import register_configs
from hptransfer.pipeline.stages import chosen_hparams, load_tune, prepare
from hptransfer.scaling.study import run_scaling

from hptransfer.pipeline.console import run_dir

register_configs()


@hydra.main(config_path="../conf", config_name="scaling", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> float:
    ctx = prepare(cfg)
    hp, source = chosen_hparams(ctx, load_tune(cfg.tune_dir) if cfg.tune_dir else None)
    summary = run_scaling(ctx, run_dir(), hp, source, progress=print)
    print(f"predicted target loss {summary['prediction']['predicted']:.4f}, measured "
          f"{summary['prediction']['actual']:.4f}: error {100 * summary['prediction']['abs_rel_error']:.2f}%")
    return summary["prediction"]["abs_rel_error"]


if __name__ == "__main__":
    entry(main)
