"""The recipes' numeric config values, checked before any data is read or any ledger is made: each key's allowed
range as data, and one error that names the key, its value and the range."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..optim import OPTIMIZERS
from ..validate import device, number

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
    "data.val_fraction": {"above": 0, "below": 1}, "data.n_train": POSITIVE_INT, "data.n_val": POSITIVE_INT,
    "data.d_in": POSITIVE_INT, "data.n_classes": {"minimum": 2, "integer": True},
    "optim.momentum": {"minimum": 0, "below": 1},
    "axes.target_steps": POSITIVE_INT, "axes.target_batch_size": POSITIVE_INT, "axes.window": {"above": 0},
}
LISTS: dict[str, dict[str, Any]] = {"proxy.sizes": POSITIVE_INT, "coord_check.sizes": POSITIVE_INT,
                                    "optim.betas": {"minimum": 0, "below": 1}}


def _optimizers() -> list[str]:
    return sorted(OPTIMIZERS)


# settings that take one of a few names (a callable: a registry that can grow at run time)
CHOICES: dict[str, Any] = {
    "train.schedule": ("cosine", "linear", "constant"), "train.parallel": ("none", "ddp", "fsdp2"),
    "optim.name": _optimizers, "optim.adjust_lr_fn": ("original", "match_rms_adamw"),
    "proxy.axis": ("width", "depth"),
}


def check_numbers(cfg: DictConfig, error: type[Exception]) -> None:
    """Raise ``error`` for the first config value outside its range (keys absent from ``cfg`` are skipped)."""
    for key, bounds in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            number(key, value, error=error, **bounds)
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        names = allowed() if callable(allowed) else allowed
        if value is not None and value not in names:
            raise error(f"{key}={value!r} is not one of {', '.join(names)}")
    device("train.device", OmegaConf.select(cfg, "train.device", default=None), error=error)
    for key, bounds in LISTS.items():
        values = OmegaConf.select(cfg, key, default=None)
        if values is None:
            continue
        if len(values) == 0:
            raise error(f"{key}=[]: give at least one value")
        for value in values:
            number(f"{key} entry", value, error=error, fix=f"{key}={list(values)}", **bounds)


def check_storage(url: str, error: type[Exception]) -> None:
    """A ``sweep.storage`` URL that SQLAlchemy can parse and whose database answers, checked before any ledger is
    made; the error names the key, the URL and the database's own one-line reason."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError as UrlError, NoSuchModuleError, SQLAlchemyError

    fix = ("give a URL like sqlite:////abs/path/trials.db or postgresql+psycopg://user@host/db (quoted for Hydra), "
           "or leave sweep.storage unset for a SQLite file in the run dir")
    try:
        parsed = make_url(url)
        engine = create_engine(parsed, connect_args={"connect_timeout": 10} if parsed.get_backend_name() ==
                               "postgresql" else {})
    except (UrlError, NoSuchModuleError, ValueError, ImportError) as err:
        raise error(f"sweep.storage={url!r} is not a database URL SQLAlchemy can use ({err}); {fix}") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(getattr(err, "orig", err)).strip() \
            else type(err).__name__
        raise error(f"sweep.storage={url!r}: cannot connect ({reason}); start the database server or fix the URL. "
                    "Nothing was written") from None
    finally:
        engine.dispose()
