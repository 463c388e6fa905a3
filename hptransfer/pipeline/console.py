"""What the three pipeline recipes share: run dir, console progress, the optional wandb run."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .loggers import start_wandb
from .stages import is_rank_zero


progress_log = logging.getLogger("hptransfer.progress")  # Hydra sends it to the console and the run's log file


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def run_dir_given() -> bool:
    """Whether the command named its run dir (``hydra.run.dir=``) rather than taking Hydra's timestamped one (a
    multirun's job dirs count as named: each job is one point of the sweep)."""
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return True
    return any(o.split("=", 1)[0].lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir")
               for o in HydraConfig.get().overrides.hydra)


def progress_printer(total: int, desc: str) -> Any:
    """A tqdm bar on a terminal, plain lines otherwise; returns a callback taking one message per trial."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=not sys.stderr.isatty() or not is_rank_zero())

    def report(message: str) -> None:
        if bar.disable:
            if is_rank_zero():
                progress_log.info(message)
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


def training_bar(total: int, lines: int = 10) -> Any:
    """A tqdm bar over training steps on a terminal (rank 0); when output goes to a file, a line every
    ``total / lines`` steps instead (so a log shows the target moving). Returns a per-row callback."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="target", disable=not sys.stderr.isatty() or not is_rank_zero())
    every = max(1, total // lines)

    def update(row: dict) -> None:
        if bar.disable:
            if is_rank_zero() and "train_loss" in row and (row["step"] % every == 0 or "val_loss" in row):
                val = f", val loss {row['val_loss']:.4f}" if "val_loss" in row else ""
                progress_log.info(f"target step {int(row['step'])}/{total}: train loss {row['train_loss']:.4f}{val}")
            return
        if "train_loss" in row and row["step"] > bar.n:
            bar.update(int(row["step"]) - bar.n)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
    return update
