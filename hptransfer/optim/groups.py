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

from ..errors import NotParametrizedError, SchemeError
from ..parametrize import get_plan, unwrap
from ..validate import number
from .muon import muon_lr_adjustment
from .registry import OPTIMIZERS, optimizer_spec


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    eps: float = 1e-8,
    *,
    independent_weight_decay: bool = False,
    decay: Literal["all", "matrices"] = "all",
    scale_eps: bool = True,
    adamw_lr: float | None = None,
    adjust_lr_fn: str = "original",
) -> list[dict[str, Any]]:
    """Parameter groups that carry each parameter's mu-P / depth learning rate, weight decay and epsilon.

    Args:
        model: a parametrized model (possibly compiled, DDP-wrapped or fully_shard-ed).
        lr: global (base-model) learning rate. weight_decay: global weight decay. eps: Adam epsilon.
        optimizer: a registered optimizer name (hptransfer.optim.registry: adam, adamw, sgd, adafactor, lion,
            muon, or one you registered); its family decides each parameter's LR factor (rules.py).
        independent_weight_decay: decay not multiplied by lr (group wd = weight_decay / group lr); default
            is PyTorch-coupled decay with lr * wd kept width-invariant.
        decay: "all" decays every parameter (like passing model.parameters()), "matrices" only >= 2-d ones.
        scale_eps: scale Adam's epsilon by the plan's factor (1/m_N, and m_L^-alpha in blocks).
        adamw_lr: muon only: the base LR of the AdamW part (default ``lr``).
        adjust_lr_fn: muon only: torch.optim.Muon's LR adjustment, divided back out relative to the base.

    Returns:
        A list of dicts for the optimizer; each has params, lr, weight_decay, lr_scale, hpt_group, and eps
        where the optimizer takes one; muon groups also say ``algorithm`` ("muon" or "adamw").
    """
    number("lr", lr, above=0, fix="the base model's learning rate (the LR you tuned at the base)")
    number("weight_decay", weight_decay, minimum=0)
    number("eps", eps, above=0)
    if adamw_lr is not None:
        number("adamw_lr", adamw_lr, above=0)
    spec = optimizer_spec(optimizer)
    if decay not in ("all", "matrices"):
        raise SchemeError(f"decay={decay!r}: choose 'all' or 'matrices'")
    root = unwrap(model)
    plan = get_plan(root)
    if plan is None:
        raise NotParametrizedError("param_groups needs a parametrized model: call hptransfer.parametrize first")
    if optimizer == "adam" and weight_decay > 0 and plan.scheme != "sp":
        warnings.warn("torch Adam adds weight decay to the gradient (L2), which is not mu-P compatible; use "
                      "optimizer='adamw' with torch.optim.AdamW", stacklevel=2)
    hybrid = spec.family == "muon"
    if hybrid:
        _check_muon_roles(plan)
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
        algorithm, family, base_lr, takes_eps = "", spec.family, lr, spec.eps
        if hybrid:  # hidden matrices on Muon, the rest on AdamW with Adam's rules
            algorithm = "muon" if rec.role == "hidden" and param.dim() == 2 else "adamw"
        if algorithm == "adamw":
            family, takes_eps = "adam", OPTIMIZERS["adamw"].eps
            base_lr = adamw_lr if adamw_lr is not None else lr
        lr_scale = rec.lr[family]
        if algorithm == "muon" and plan.scheme != "sp":  # SP means torch's own behaviour, adjustment included
            lr_scale *= muon_lr_adjustment(adjust_lr_fn, rec.base_shape) / muon_lr_adjustment(adjust_lr_fn, rec.shape)
        decays = decay == "all" or param.dim() >= 2
        if not decays or weight_decay == 0:
            wd = 0.0
        elif independent_weight_decay:
            wd = weight_decay / (base_lr * lr_scale)
        else:
            wd = weight_decay * rec.weight_decay[family]
        group_eps = eps * (rec.eps if scale_eps else 1.0)
        key = (algorithm, base_lr, lr_scale, wd, group_eps if takes_eps else None)
        if key not in groups:
            group: dict[str, Any] = {"params": [], "lr": base_lr * lr_scale, "weight_decay": wd,
                                     "lr_scale": lr_scale * base_lr / lr, "hpt_group": ""}
            if takes_eps:
                group["eps"] = group_eps
            if algorithm:
                group["algorithm"] = algorithm
            groups[key] = group
        groups[key]["params"].append(param)
        label = f"{rec.role}{'/block' if rec.block else ''}"
        labels = groups[key]["hpt_group"].split(",") if groups[key]["hpt_group"] else []
        if label not in labels:
            groups[key]["hpt_group"] = ",".join(labels + [label])
    return list(groups.values())


def _check_muon_roles(plan: Any) -> None:
    """Muon needs to know the hidden matrices; at the base's own shape no dim differs from the base, so the
    plan cannot tell a hidden matrix from an embedding or an input layer by shape: refuse, with the fix."""
    matrices = [r for r in plan.params.values() if len(r.shape) == 2 and r.role != "output"]
    if matrices and not any(r.role in ("hidden", "input") for r in matrices):
        raise SchemeError(
            "optimizer='muon' splits hidden matrices (Muon) from embeddings, readout and vectors (AdamW) by their "
            "role, but this model has the base's own shape, where shapes cannot tell them apart: pass "
            "delta=<the model at another width, e.g. on the meta device> to hptransfer.parametrize")


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
