"""What the three pipeline recipes share: run dir, console progress, the optional wandb run."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .loggers import start_wandb
from .stages import is_rank_zero


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def progress_printer(total: int, desc: str) -> Any:
    """A tqdm bar on a terminal, plain lines otherwise; returns a callback taking one message per trial."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=not sys.stderr.isatty() or not is_rank_zero())

    def report(message: str) -> None:
        if bar.disable:
            if is_rank_zero():
                print(message, flush=True)
        else:
            bar.update(1)
            bar.set_postfix_str(message[-60:])
    return report


@contextmanager
def maybe_wandb(cfg: DictConfig, job_type: str, directory: Path) -> Iterator[Any]:
    """A wandb run when logger=wandb (rank 0 only under torchrun), else None."""
    if cfg.logger.name != "wandb" or not is_rank_zero():
        yield None
        return
    group = cfg.logger.group or cfg.name
    logger_cfg = OmegaConf.merge(cfg.logger, {"group": group})
    run = start_wandb(logger_cfg, job_type, OmegaConf.to_container(cfg, resolve=True), directory)
    try:
        yield run
    finally:
        run.finish()


def training_bar(total: int) -> Any:
    """A tqdm bar over training steps on a terminal (rank 0); silent otherwise. Returns a per-row callback."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="target", disable=not sys.stderr.isatty() or not is_rank_zero())

    def update(row: dict) -> None:
        if "train_loss" in row and row["step"] > bar.n:
            bar.update(int(row["step"]) - bar.n)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
    return update
