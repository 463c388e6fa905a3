"""Reference model families: plain PyTorch (what users bring), native (written with hptransfer.nn), and
standard layouts written as their libraries write them (torchvision's ResNets, timm's ViT)."""

from .native import GPT, MLP, ResMLP, ResNet
from .plain import PlainGPT, PlainMLP, PlainResMLP
from .registry import FAMILIES, ModelSpec, UnknownModelError
from .resnet import BasicBlock, Bottleneck, StandardResNet
from .vit import VisionTransformer

__all__ = ["BasicBlock", "Bottleneck", "FAMILIES", "GPT", "MLP", "ModelSpec", "PlainGPT", "PlainMLP", "PlainResMLP",
           "ResMLP", "ResNet", "StandardResNet", "UnknownModelError", "VisionTransformer"]
