"""build_optimizer(): one ready torch optimizer for a parametrized model, every parameter's LR scaled."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..errors import SchemeError
from . import groups
from .registry import optimizer_spec
from .schedule_free import training_weights


def _sharded(params: Iterable[torch.Tensor]) -> bool:
    """Whether any parameter is a DTensor (FSDP2's fully_shard makes them so)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support cannot shard
        return False
    return any(isinstance(p, DTensor) for p in params)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, *, eps: float = 1e-8,
                    adamw_lr: float | None = None, adjust_lr_fn: str = "original",
                    group_kwargs: dict[str, Any] | None = None, **optimizer_kwargs: Any) -> torch.optim.Optimizer:
    """One ready optimizer for a parametrized model, with every parameter's scaled LR, weight decay and eps.

    Args:
        name: a registered optimizer (adam, adamw, sgd, adafactor, lion, muon, schedulefree_adamw, or your
            own). A schedule-free optimizer needs ``optimizer.train()`` before training steps and
            ``optimizer.eval()`` before evaluating or saving (``evaluation_weights`` does both).
        lr: the base model's tuned LR. For muon it is the Muon LR of the hidden matrices; ``adamw_lr``
            (default: the same ``lr``) is the base LR of the AdamW part.
        adjust_lr_fn: torch.optim.Muon's LR adjustment; the groups divide it back out relative to the base's
            shapes, so the step's spectral norm follows mu-P's sqrt(fan_out / fan_in) with either choice.
        group_kwargs: more arguments of param_groups (independent_weight_decay, decay, scale_eps; a
            weight_decay or eps here wins over the arguments above).
        optimizer_kwargs: passed to the optimizer (e.g. betas, momentum; for muon, Muon's keys go to Muon and
            the others to AdamW).
    """
    spec = optimizer_spec(name)
    if spec.unsharded_only and _sharded(model.parameters()):
        raise SchemeError(f"optimizer {name!r} cannot train FSDP2-sharded parameters: {spec.unsharded_only}. "
                          "Train with DDP (train.parallel=ddp) or one process, or choose another optimizer")
    options = {"weight_decay": weight_decay, "eps": eps, "adamw_lr": adamw_lr, "adjust_lr_fn": adjust_lr_fn,
               **(group_kwargs or {})}  # group_kwargs may also carry weight_decay or eps (coord_check's do)
    param_groups = groups.param_groups(model, lr, optimizer=name, **options)
    if name == "muon":
        optimizer_kwargs = dict(optimizer_kwargs, adjust_lr_fn=options["adjust_lr_fn"])
    optimizer = spec.build(param_groups, optimizer_kwargs)
    training_weights(optimizer)
    return optimizer
