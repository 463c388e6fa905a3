"""Model-family adapters: what parametrize() must know about a family to apply the rules without guessing."""

from .base import (ADAPTERS, Adapter, AdapterError, AttentionSite, InitStd, Structure, available, find_adapter,
                   register)

__all__ = ["ADAPTERS", "Adapter", "AdapterError", "AttentionSite", "InitStd", "Structure", "available",
           "find_adapter", "register"]
