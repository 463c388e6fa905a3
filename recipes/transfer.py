"""Train the target with transferred hyperparameters.

    python recipes/transfer.py tune_dir=outputs/tune/...      # the LR a tune run chose
    python recipes/transfer.py lr=0.004 model.width=1024
    torchrun --standalone --nproc_per_node=8 recipes/transfer.py tune_dir=... train.parallel=fsdp2 \
        hydra.run.dir=outputs/target                          # every rank must get the same run dir

Writes transfer.json (the hyperparameters, where they came from, the scheme), metrics.jsonl,
target_loss.png and checkpoint.pt; train.resume=true continues from the checkpoint. Exit codes: 0 done, 1 the
target diverged, 3 a configuration mistake, 4 an internal error (hptransfer.pipeline.cli).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from hptransfer.pipeline.cli import EXIT_FAIL, entry, guarded
from hptransfer.pipeline.config import register_configs
from hptransfer.pipeline.stages import chosen_hparams, is_rank_zero, load_tune, prepare, report, run_target

from hptransfer.pipeline.console import maybe_wandb, progress_log, run_dir, training_bar

register_configs()


@hydra.main(config_path="../conf", config_name="transfer", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> float:
    ctx = prepare(cfg)
    directory = run_dir()
    progress_log.info(f"run dir: {directory}")
    tune_summary = load_tune(cfg.tune_dir) if cfg.tune_dir else None
    hp, source = chosen_hparams(ctx, tune_summary)
    with maybe_wandb(cfg, "target", directory) as wandb_run:
        result = run_target(ctx, directory, hp, source, wandb_run, training_bar(ctx.settings.steps))
    if is_rank_zero():
        report(ctx, directory, tune_summary=tune_summary, target=result, coord=None, source=source, hp=hp)
        state = f"diverged ({result.reason})" if result.diverged else f"val loss {result.val_loss:.4f}"
        print(f"target {state} with lr {hp.lr:.4g} from {source}; files in {directory}")
    if result.diverged:
        sys.exit(EXIT_FAIL)
    return result.val_loss


if __name__ == "__main__":
    entry(main)
