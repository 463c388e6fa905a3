"""Scaling laws from a width ladder: the fits and the infinite-width limit (fit), and the study that tunes,
trains and fits a ladder (study).

The fits are re-exported here: earlier READMEs imported them as ``from hptransfer.scaling import ...``."""

from .fit import (ChinchillaFit, PowerLawFit, ScalingFitError, WidthLimit, drop_early, fit_chinchilla,
                  fit_power_law, width_limit)

__all__ = ["ChinchillaFit", "PowerLawFit", "ScalingFitError", "WidthLimit", "drop_early", "fit_chinchilla",
           "fit_power_law", "width_limit"]
