"""Optimizers by name, each tied to a family of rules (``rules.OPTIMIZER_FAMILIES``) and a builder.

Known names: adam, adamw, sgd (torch), adafactor (torch.optim.Adafactor), lion (hptransfer's Lion), muon
(torch.optim.Muon on the hidden matrices, AdamW on everything else, as one optimizer) and schedulefree_adamw
(the ``schedulefree`` package's AdamWScheduleFree, when it is installed). Declare your own with
``register_optimizer(name, family, build)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import SchemeError
from ..rules import OPTIMIZER_FAMILIES
from .lion import Lion
from .muon import build_muon
from .schedule_free import build_schedulefree_adamw


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer: its rule family, whether groups carry an Adam ``eps``, how to build it, and why it
    cannot step FSDP2-sharded (DTensor) parameters, if it cannot (``None``: it can)."""

    family: str
    build: Callable[[list[dict[str, Any]], dict[str, Any]], torch.optim.Optimizer]
    eps: bool = False
    unsharded_only: str | None = None


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec("adam", lambda g, kw: torch.optim.Adam(g, **kw), eps=True),
    "adamw": OptimizerSpec("adam", lambda g, kw: torch.optim.AdamW(g, **kw), eps=True),
    "sgd": OptimizerSpec("sgd", lambda g, kw: torch.optim.SGD(g, **kw)),
    "adafactor": OptimizerSpec("adafactor", lambda g, kw: torch.optim.Adafactor(g, **kw), unsharded_only=(
        "torch.optim.Adafactor's step runs in-place ops on the norms of a sharded tensor, which DTensor rejects "
        "(aten.pow_ on a _NormPartial placement)")),
    "lion": OptimizerSpec("sign", lambda g, kw: Lion(g, **kw)),
    "muon": OptimizerSpec("muon", build_muon),
    "schedulefree_adamw": OptimizerSpec("adam", build_schedulefree_adamw, eps=True),
}


def register_optimizer(name: str, family: str, build: Callable[[list[dict[str, Any]], dict[str, Any]],
                       torch.optim.Optimizer], eps: bool = False, unsharded_only: str | None = None) -> None:
    """Declare an optimizer: ``family`` is the rule family it follows (a key of rules.OPTIMIZER_FAMILIES),
    ``build(groups, kwargs)`` makes it from hptransfer's param groups, ``eps`` whether groups carry Adam's eps,
    ``unsharded_only`` why it cannot step FSDP2-sharded parameters (build_optimizer then refuses them)."""
    if family not in OPTIMIZER_FAMILIES or family == "muon":
        raise SchemeError(f"family={family!r}: choose one of {sorted(set(OPTIMIZER_FAMILIES) - {'muon'})} (muon "
                          "groups need the hybrid split; use name='muon')")
    OPTIMIZERS[name] = OptimizerSpec(family, build, eps, unsharded_only)


def optimizer_spec(name: str) -> OptimizerSpec:
    """The registered optimizer ``name``, or an error that lists the known ones and how to add one."""
    if name not in OPTIMIZERS:
        families = ", ".join(f"{k} ({v.why})" for k, v in OPTIMIZER_FAMILIES.items())
        raise SchemeError(
            f"optimizer {name!r} has no scaling rules here; known: {sorted(OPTIMIZERS)}. If it updates like one "
            f"of the families [{families}], declare it with hptransfer.register_optimizer({name!r}, family, "
            "build), where build(groups, kwargs) returns the torch optimizer")
    return OPTIMIZERS[name]
