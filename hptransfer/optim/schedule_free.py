"""Schedule-free optimizers (the schedulefree package): building one, and switching between the point it
trains at and the averaged point it is evaluated and saved at."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from ..errors import SchemeError


def build_schedulefree_adamw(groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    # Its averaging weights each group by its own lr_max**2 over that group's running sum, so a per-group LR
    # factor cancels there and scales only the step: the adam rules carry over unchanged.
    try:
        import schedulefree
    except ImportError as err:
        raise SchemeError("optimizer 'schedulefree_adamw' needs the schedulefree package: pip install "
                          "schedulefree (or choose adamw)") from err
    return schedulefree.AdamWScheduleFree(groups, **kwargs)


def _has_modes(optimizer: torch.optim.Optimizer) -> bool:
    """Schedule-free optimizers carry train() and eval(); torch's own have neither."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


def training_weights(optimizer: torch.optim.Optimizer) -> None:
    """Put a schedule-free optimizer in training mode; idempotent, and a no-op for other optimizers.
    build_optimizer calls it; call it again after loading a saved state."""
    if _has_modes(optimizer):
        optimizer.train()


@contextlib.contextmanager
def evaluation_weights(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block the model holds the weights to evaluate and save; training resumes after it.

    A no-op for most optimizers. Schedule-free ones train at one point (y) and evaluate at another (their
    average x); they switch with ``optimizer.eval()`` / ``optimizer.train()``, which this calls.
    """
    switch = _has_modes(optimizer)
    if switch:
        optimizer.eval()
    try:
        yield
    finally:
        if switch:
            optimizer.train()
