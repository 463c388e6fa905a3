"""The recipes' numeric config values, checked before any data is read or any ledger is made: each key's allowed
range as data, and one error that names the key, its value and the range."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..validate import number

POSITIVE_INT = {"minimum": 1, "integer": True}
COUNT = {"minimum": 0, "integer": True}
RANGES: dict[str, dict[str, Any]] = {
    "model.width": POSITIVE_INT, "model.depth": POSITIVE_INT,
    "model.base_width": POSITIVE_INT, "model.base_depth": POSITIVE_INT,
    "optim.lr": {"above": 0}, "optim.weight_decay": {"minimum": 0}, "optim.eps": {"above": 0},
    "optim.warmup_frac": {"minimum": 0, "below": 1},
    "train.steps": POSITIVE_INT, "train.batch_size": POSITIVE_INT, "train.seq_len": POSITIVE_INT,
    "train.eval_batches": POSITIVE_INT, "train.eval_every": COUNT, "train.checkpoint_every": COUNT,
    "train.min_lr_frac": {"minimum": 0, "maximum": 1}, "train.grad_clip": {"minimum": 0},
    "train.diverge_factor": {"above": 1},
    "sweep.n_trials": POSITIVE_INT, "sweep.heartbeat_s": {"minimum": 0}, "sweep.stale_after_s": {"above": 0},
    "sweep.log2_lr_step": {"above": 0},
    "coord_check.steps": POSITIVE_INT, "coord_check.seeds": POSITIVE_INT, "coord_check.lr": {"above": 0},
    "coord_check.batch_size": POSITIVE_INT, "coord_check.seq_len": POSITIVE_INT,
    "lr": {"above": 0},
}
LISTS: dict[str, dict[str, Any]] = {"proxy.sizes": POSITIVE_INT, "coord_check.sizes": POSITIVE_INT}


def check_numbers(cfg: DictConfig, error: type[Exception]) -> None:
    """Raise ``error`` for the first config value outside its range (keys absent from ``cfg`` are skipped)."""
    for key, bounds in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            number(key, value, error=error, **bounds)
    for key, bounds in LISTS.items():
        values = OmegaConf.select(cfg, key, default=None)
        if values is None:
            continue
        if len(values) == 0:
            raise error(f"{key}=[]: give at least one size")
        for value in values:
            number(f"{key} entry", value, error=error, fix=f"{key}={list(values)}", **bounds)
