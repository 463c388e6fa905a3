"""Reference model families: plain PyTorch (what users bring) and native (written with hptransfer.nn)."""

from .native import GPT, MLP, ResMLP
from .plain import PlainGPT, PlainMLP, PlainResMLP

__all__ = ["GPT", "MLP", "PlainGPT", "PlainMLP", "PlainResMLP", "ResMLP"]
