"""Optimizers under the schemes' rules: per-parameter groups, the optimizer registry, and the optimizers
implemented here (Lion, the Muon + AdamW hybrid)."""

from .build import build_optimizer
from .groups import lr_scales, param_groups, scaled, set_lr
from .lion import Lion
from .muon import MuonWithAdamW
from .registry import OPTIMIZERS, OptimizerSpec, optimizer_spec, register_optimizer
from .schedule_free import evaluation_weights, training_weights

__all__ = ["OPTIMIZERS", "Lion", "MuonWithAdamW", "OptimizerSpec", "build_optimizer", "evaluation_weights",
           "lr_scales", "optimizer_spec", "param_groups", "register_optimizer", "scaled", "set_lr",
           "training_weights"]
