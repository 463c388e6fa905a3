"""Model-family adapters: what parametrize() cannot measure about a family (residual layout, init law,
width-dependent constants, probe inputs). The transformers families register themselves when transformers is
installed."""

from . import hf  # noqa: F401  (registers the transformers families)
from .base import ADAPTERS, Adapter, AdapterError, Constant, InitStd, Knowledge, available, find_adapter, register

__all__ = ["ADAPTERS", "Adapter", "AdapterError", "Constant", "InitStd", "Knowledge", "available", "find_adapter",
           "register"]
