"""hptransfer: mu-P, Depth-mu-P and CompleteP hyperparameter transfer for any PyTorch model."""

from . import adapters, nn, rules, testing
from .adapters import AdapterError
from .axes import Fits, Setting, TransferError, basin_optimum, fit_optimum, gradient_noise_scale, transfer
from .check import CheckReport
from .errors import (AlreadyParametrizedError, ArgumentError, AttentionError, BaseShapeError, BranchError,
                     CheckError, HptError, InitError, NotParametrizedError, ReadoutError, SchemeError,
                     ShapesFileError)
from .optim import (Lion, MuonWithAdamW, build_optimizer, lr_scales, param_groups, register_optimizer, scaled,
                    set_lr)
from .parametrize import get_plan, parametrize, unparametrize, unwrap
from .plan import ModuleRecord, ParamRecord, Plan
from .structure.shapes import load_base, save_shapes
from .scaling import fit_chinchilla, fit_power_law, width_limit
from .verify.coord import CoordCheckError, CoordCheckResult, Thresholds, coord_check

__version__ = "0.1.0"

__all__ = [
    "Fits", "Setting", "TransferError", "basin_optimum", "fit_chinchilla", "fit_optimum", "fit_power_law",
    "gradient_noise_scale", "transfer", "width_limit",
    "AdapterError", "AlreadyParametrizedError", "ArgumentError", "AttentionError", "BaseShapeError", "BranchError", "CheckError",
    "CheckReport", "CoordCheckError", "CoordCheckResult", "HptError", "InitError", "Lion", "ModuleRecord",
    "MuonWithAdamW", "NotParametrizedError", "ParamRecord", "Plan", "ReadoutError", "SchemeError",
    "ShapesFileError", "Thresholds", "adapters", "build_optimizer", "coord_check", "get_plan", "load_base",
    "lr_scales", "nn", "param_groups", "parametrize", "register_optimizer", "rules", "save_shapes", "scaled",
    "set_lr", "testing", "unparametrize", "unwrap",
]
