"""Reference model families: plain PyTorch (what users bring) and native (written with hptransfer.nn)."""

from .native import GPT, MLP, ResMLP, ResNet
from .plain import PlainGPT, PlainMLP, PlainResMLP
from .registry import FAMILIES, ModelSpec, UnknownModelError

__all__ = ["FAMILIES", "GPT", "MLP", "ModelSpec", "PlainGPT", "PlainMLP", "PlainResMLP", "ResMLP", "ResNet", "UnknownModelError"]
