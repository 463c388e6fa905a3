"""The step(closure) convention of torch optimizers, shared by the optimizers implemented here."""

from __future__ import annotations

from typing import Any, Callable

import torch


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    """The closure's loss, with gradients on (torch optimizers' step(closure) convention)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
