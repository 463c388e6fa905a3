"""Optional Weights & Biases logging, offline by default when there is no API key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import HptError


class LoggerError(HptError, RuntimeError):
    """A logger was requested but cannot be used (e.g. wandb not installed)."""


def wandb_mode(requested: str | None) -> str:
    """The mode to use: the config's, else $WANDB_MODE, else online with an API key and offline without."""
    if requested:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def start_wandb(logger_cfg: Any, job_type: str, config: dict[str, Any], run_dir: Path,
                name: str | None = None) -> Any:
    """Start a wandb run for one job (proxy, target or coord_check); returns the run."""
    try:
        import wandb
    except ImportError as err:
        raise LoggerError("logger=wandb needs the wandb package: pip install 'hptransfer[wandb]', or use "
                          "logger=none") from err
    return wandb.init(project=logger_cfg.project, group=logger_cfg.group, job_type=job_type, config=config,
                      name=name, dir=str(run_dir), mode=wandb_mode(logger_cfg.mode), reinit="finish_previous")
