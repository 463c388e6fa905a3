"""param_groups(): per-parameter learning rate, weight decay and epsilon for any torch optimizer.

Groups are built by parameter *name* from the model's Plan, so they work on the model after
``torch.compile``, inside DDP and after FSDP2 ``fully_shard`` (build the groups after sharding).
Every group records ``lr_scale`` (its LR relative to the global LR), so schedulers that set absolute
learning rates can keep mu-P's per-group ratios with ``set_lr`` / ``scaled`` (mup issue #40).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from .errors import NotParametrizedError, SchemeError
from .parametrize import get_plan, unwrap

OPTIMIZERS = {"adam": "adam", "adamw": "adam", "sgd": "sgd"}


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw",
    eps: float = 1e-8,
    *,
    independent_weight_decay: bool = False,
    decay: Literal["all", "matrices"] = "all",
    scale_eps: bool = True,
) -> list[dict[str, Any]]:
    """Parameter groups that carry each parameter's mu-P / depth learning rate, weight decay and epsilon.

    Args:
        model: a parametrized model (possibly compiled, DDP-wrapped or fully_shard-ed).
        lr: global (base-model) learning rate. weight_decay: global weight decay. eps: Adam epsilon.
        optimizer: "adam", "adamw" (LR and eps rules of Adam) or "sgd".
        independent_weight_decay: decay not multiplied by lr (group wd = weight_decay / group lr); default
            is PyTorch-coupled decay with lr * wd kept width-invariant.
        decay: "all" decays every parameter (like passing model.parameters()), "matrices" only >= 2-d ones.
        scale_eps: scale Adam's epsilon by the plan's factor (1/m_N, and m_L^-alpha in blocks).

    Returns:
        A list of dicts for ``torch.optim.<Optimizer>(groups, ...)``; each has params, lr, weight_decay,
        lr_scale, hpt_group and (Adam family) eps.
    """
    if optimizer not in OPTIMIZERS:
        raise SchemeError(f"optimizer={optimizer!r}: choose one of {sorted(OPTIMIZERS)}")
    if decay not in ("all", "matrices"):
        raise SchemeError(f"decay={decay!r}: choose 'all' or 'matrices'")
    family = OPTIMIZERS[optimizer]
    root = unwrap(model)
    plan = get_plan(root)
    if plan is None:
        raise NotParametrizedError("param_groups needs a parametrized model: call hptransfer.parametrize first")
    if optimizer == "adam" and weight_decay > 0 and plan.scheme != "sp":
        warnings.warn("torch Adam adds weight decay to the gradient (L2), which is not mu-P compatible; use "
                      "optimizer='adamw' with torch.optim.AdamW", stacklevel=2)
    groups: dict[tuple, dict[str, Any]] = {}
    for name, param in root.named_parameters():
        if not param.requires_grad:
            continue
        try:
            rec = plan.record(name)
        except KeyError:
            raise NotParametrizedError(
                f"parameter {name!r} is not in the model's plan (added after parametrize?); parametrize the "
                "finished model") from None
        lr_scale = rec.lr[family]
        decays = decay == "all" or param.dim() >= 2
        if not decays or weight_decay == 0:
            wd = 0.0
        elif independent_weight_decay:
            wd = weight_decay / (lr * lr_scale)
        else:
            wd = weight_decay * rec.weight_decay[family]
        group_eps = eps * (rec.eps if scale_eps else 1.0)
        key = (lr_scale, wd, group_eps if family == "adam" else None)
        if key not in groups:
            group: dict[str, Any] = {"params": [], "lr": lr * lr_scale, "weight_decay": wd,
                                     "lr_scale": lr_scale, "hpt_group": ""}
            if family == "adam":
                group["eps"] = group_eps
            groups[key] = group
        groups[key]["params"].append(param)
        label = f"{rec.role}{'/block' if rec.block else ''}"
        labels = groups[key]["hpt_group"].split(",") if groups[key]["hpt_group"] else []
        if label not in labels:
            groups[key]["hpt_group"] = ",".join(labels + [label])
    return list(groups.values())


def lr_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's LR relative to the global LR (1.0 for groups hptransfer did not build)."""
    return [float(g.get("lr_scale", 1.0)) for g in optimizer.param_groups]


def scaled(optimizer: torch.optim.Optimizer, value: float) -> list[float]:
    """``value`` times each group's lr_scale: pass it to schedulers that take per-group absolute LRs,
    e.g. ``OneCycleLR(opt, max_lr=hpt.scaled(opt, 3e-3), ...)``."""
    return [value * s for s in lr_scales(optimizer)]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the global learning rate: every group gets ``lr * lr_scale`` (never one absolute LR for all)."""
    for group, scale in zip(optimizer.param_groups, lr_scales(optimizer)):
        group["lr"] = lr * scale
