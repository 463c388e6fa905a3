"""Changing a model as its Plan says: forward multipliers, attention scales, family constants, and init."""

from .attention import AttentionScaleMode, AttentionScope
from .init import initialize, record_base_stds
from .multipliers import HOOKS_ATTR, ORIGINALS_ATTR, ScaleInput, ScaleOutput, install, native_factor, uninstall

__all__ = ["AttentionScaleMode", "AttentionScope", "HOOKS_ATTR", "ORIGINALS_ATTR", "ScaleInput", "ScaleOutput",
           "initialize", "install", "native_factor", "record_base_stds", "uninstall"]
