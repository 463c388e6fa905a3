"""Transfer beyond width and depth: batch size, training horizon and weight decay (``hptransfer.transfer``)."""

from .basin import Basin, basin_optimum
from .fit import AxisFitError, OptimumFit, fit_optimum
from .noise import NoiseScale, NoiseScaleError, gradient_noise_scale
from .rules import RULES, SQRT_PRIOR, AxisRule
from .transfer import Fits, Moved, Setting, Transferred, TransferError, transfer

__all__ = ["RULES", "SQRT_PRIOR", "AxisFitError", "AxisRule", "Basin", "Fits", "Moved", "NoiseScale",
           "NoiseScaleError", "OptimumFit", "Setting", "TransferError", "Transferred", "basin_optimum", "fit_optimum",
           "gradient_noise_scale", "transfer"]
