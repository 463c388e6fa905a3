"""Standard residual CNNs, written the way torchvision writes them: BasicBlock and Bottleneck with BatchNorm,
a stride-2 first block in every stage after the first (with a 1x1 projection shortcut), and a linear head.

``width`` scales every stage's channels (a wide ResNet's k); ``blocks`` is the number of blocks per stage.
torchvision itself cannot be imported next to a CPU build of torch here, so these are the reference for the
standard layout. Plain modules only: hptransfer.parametrize reaches them with ``branches="layer*.*.bn2"``
(BasicBlock) or ``"layer*.*.bn3"`` (Bottleneck): the last norm of each block is its residual branch's output.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the shortcut projects when the stride or the channel count changes."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class StandardResNet(nn.Module):
    """A ResNet: stem, ``len(stage_channels)`` stages of ``blocks`` blocks, global average pool, linear head.

    Args:
        block: BasicBlock or Bottleneck. blocks: blocks per stage (an int for all, or one per stage).
        stage_channels: channels of each stage at width 1 (CIFAR ResNets: 16, 32, 64; ImageNet ones: 64..512).
        width: multiplies every stage's channels. in_channels, classes: the data's.
        cifar_stem: a 3x3 stride-1 stem (small images); else torchvision's 7x7 stride-2 stem and a max pool.
        kaiming_init: torchvision's init (convolutions N(0, 2 / fan_out), BatchNorm 1 and 0); else PyTorch's.
    """

    def __init__(self, block: type[nn.Module] = BasicBlock, blocks: int | Sequence[int] = 1,
                 stage_channels: Sequence[int] = (16, 32, 64), width: int = 1, in_channels: int = 3,
                 classes: int = 10, cifar_stem: bool = True, kaiming_init: bool = True) -> None:
        super().__init__()
        per_stage = [blocks] * len(stage_channels) if isinstance(blocks, int) else list(blocks)
        stem = stage_channels[0] * width
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        channels_in = stem
        for index, (channels, count) in enumerate(zip(stage_channels, per_stage)):
            layers = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                layers.append(block(channels_in, channels * width, stride))
                channels_in = channels * width * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
        self.stages = len(stage_channels)
        self.fc = nn.Linear(channels_in, classes)
        if kaiming_init:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(self.stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


def branch_glob(block: type[nn.Module]) -> str:
    """The glob of a ResNet's residual branches: each block's last BatchNorm."""
    return "layer*.*.bn3" if block is Bottleneck else "layer*.*.bn2"
