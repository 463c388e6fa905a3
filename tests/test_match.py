"""Matching a deeper model's added blocks to base layers of their own kind (hptransfer.structure.match)."""

from __future__ import annotations

import math

import pytest
import torch

import hptransfer as hpt
from hptransfer.models import BasicBlock, Bottleneck, StandardResNet

from conftest import meta

IMAGES = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def adam_lr(model: torch.nn.Module, name: str) -> float:
    param = dict(model.named_parameters())[name]
    return next(g["lr"] for g in hpt.param_groups(model, lr=1.0) if any(p is param for p in g["params"]))


@pytest.mark.parametrize("real_base", [True, False], ids=["real base", "meta base"])
def test_added_resnet_blocks_are_matched_to_a_base_layer_of_their_own_kind(real_base):
    """A wider, deeper CIFAR ResNet over its proxy (width x2, 1 -> 2 blocks per stage). The added block's conv1 reads
    its stage's width; block 0's conv1 in the base reads the previous stage's (it downsamples). mu-P's factors for
    conv1 of layer2.1 follow its own fan-in: 64 channels over the base's 32, so Adam LR x1/2 and init std
    base / sqrt(2). Matched to block 0 by index it got 64 over 16: LR x1/4 and std x0.71 too small."""
    torch.manual_seed(0)
    model = StandardResNet(BasicBlock, blocks=2, width=2)
    base = StandardResNet(BasicBlock, blocks=1, width=1) if real_base else meta(StandardResNet, BasicBlock, 1, width=1)
    plan = hpt.parametrize(model, base, "mup", example_inputs=IMAGES)
    rec = plan.record("layer2.1.conv1.weight")
    assert rec.base_shape == (32, 32, 3, 3) and rec.fan_in_mult == 2 and rec.matched == "layer2.0.conv2.weight"
    assert adam_lr(model, "layer2.1.conv1.weight") == pytest.approx(0.5)
    assert adam_lr(model, "layer2.0.conv1.weight") == pytest.approx(0.5)  # the downsampling conv: 64 / 32 too
    # torchvision's init is N(0, 2 / fan_out); the base's 3x3 conv at 32 -> 32 channels has std sqrt(2 / 288), and
    # mu-P divides it by sqrt(m_fanin) = sqrt(2)
    want = math.sqrt(2 / (32 * 9)) / math.sqrt(2)
    assert float(model.layer2[1].conv1.weight.std()) == pytest.approx(want, rel=0.08)


def test_depth_alone_on_a_resnet_works_with_its_branches():
    """1 -> 4 blocks per stage at the base's width: every width factor is 1, the branches (each block's last
    BatchNorm) get Depth-muP's L^-1/2 and the in-block Adam LR its L^-1/2 (TP6)."""
    model = StandardResNet(BasicBlock, blocks=4, width=1)
    plan = hpt.parametrize(model, meta(StandardResNet, BasicBlock, 1, width=1), "depth_mup", branches="layer*.*.bn2",
                           example_inputs=IMAGES)
    assert plan.depth_mult == 4 and plan.n_branches == 12 and plan.base_branches == 3
    assert all(r.fan_in_mult == 1 and r.fan_out_mult == 1 for r in plan.params.values())
    assert {m.factor for m in plan.modules if m.kind == "branch"} == {0.5}
    assert adam_lr(model, "layer2.3.conv1.weight") == pytest.approx(0.5)  # in a block: L^(alpha - 1)
    assert adam_lr(model, "conv1.weight") == pytest.approx(1.0)  # the stem is outside every block
    assert adam_lr(model, "fc.weight") == pytest.approx(1.0)


def test_a_layer_no_base_block_has_is_matched_by_its_sizes():
    """A Bottleneck stage's added blocks reduce from the stage's own expanded width, which block 0 (reducing
    from the previous stage's) never does: the size map gives its base shape, and its init law is inferred from
    the model's other convolutions (torchvision's fan_out law)."""
    torch.manual_seed(0)
    model = StandardResNet(Bottleneck, blocks=2, width=2)
    plan = hpt.parametrize(model, StandardResNet(Bottleneck, blocks=1, width=1), "mup", example_inputs=IMAGES)
    rec = plan.record("layer2.1.conv1.weight")  # 256 -> 64 channels, at the base's width 128 -> 32
    assert rec.base_shape == (32, 128, 1, 1) and rec.matched.startswith("(none: its sizes")
    assert "law 'fan_out'" in rec.init_source
    assert adam_lr(model, "layer2.1.conv1.weight") == pytest.approx(0.5)
    assert float(model.layer2[1].conv1.weight.std()) == pytest.approx(math.sqrt(2 / 64), rel=0.08)


def test_an_added_layer_whose_sizes_the_base_cannot_tell_is_refused_naming_it():
    """Widths whose sizes collide (the model's 64 stands for the base's 32 in one place and 16 in another) leave
    an added layer with no base shape: refused, with the layer and what to do."""

    class Stack(torch.nn.Module):
        def __init__(self, width: int, inner: int, depth: int) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(4, width)
            self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(width if i == 0 else inner, inner),
                                                                  torch.nn.ReLU()) for i in range(depth))
            self.out = torch.nn.Linear(inner, 2)

        def forward(self, x):
            x = self.inp(x)
            for block in self.blocks:
                x = block(x)
            return self.out(x)

    with pytest.raises(hpt.BaseShapeError, match=r"'blocks\.1\.0\.weight' .*64 -> \[16, 32\].* no base layer has "
                                                 r"its kind and fan pattern for certain.*as deep as the model"):
        hpt.parametrize(Stack(64, 64, 2), Stack(32, 16, 1), "mup", example_inputs=torch.randn(2, 4))
