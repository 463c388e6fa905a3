"""hptransfer: mu-P, Depth-mu-P and CompleteP hyperparameter transfer for any PyTorch model."""

from . import adapters, nn, rules, testing
from .adapters import AdapterError
from .attention import AttentionError
from .verify.coord import CoordCheckError, CoordCheckResult, Thresholds, coord_check
from .init import InitError
from .errors import (AlreadyParametrizedError, BaseShapeError, BranchError, HptError, NotParametrizedError,
                     ReadoutError, SchemeError, ShapesFileError)
from .optim import lr_scales, param_groups, scaled, set_lr
from .optimizers import Lion, MuonWithAdamW, build_optimizer, register_optimizer
from .parametrize import get_plan, parametrize, unparametrize, unwrap
from .plan import ModuleRecord, ParamRecord, Plan
from .shapes import load_base, save_shapes

__version__ = "0.1.0"

__all__ = [
    "AdapterError", "AlreadyParametrizedError", "AttentionError", "InitError", "adapters", "testing", "BaseShapeError", "BranchError", "CoordCheckError", "CoordCheckResult", "HptError",
    "ModuleRecord", "Thresholds", "coord_check",
    "NotParametrizedError", "ParamRecord", "Plan", "ReadoutError", "SchemeError", "ShapesFileError",
    "Lion", "MuonWithAdamW", "build_optimizer", "register_optimizer", "get_plan", "load_base", "lr_scales", "nn", "param_groups", "parametrize", "rules", "save_shapes",
    "scaled", "set_lr", "unparametrize", "unwrap",
]
