"""Coordinate checks on zoo members (tests/zoo.py): mu-P passes and SP fails in width; on a standard ResNet,
Depth-mu-P passes and mu-P fails in depth."""

from __future__ import annotations

import pytest
import torch

import hptransfer as hpt
from hptransfer.models import BasicBlock, StandardResNet

from zoo import BASE, VOCAB, ZOO, Variant

pytestmark = pytest.mark.slow
WIDTHS = [2 * BASE, 4 * BASE, 8 * BASE, 16 * BASE]  # the smallest >> tokens x steps (16 x 3)
BY_NAME = {v.name: v for v in ZOO}


def token_data(batch: int = 2, seq: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return (torch.randint(0, VOCAB, (batch, seq), generator=generator),
            torch.randint(0, VOCAB, (batch, seq), generator=generator))


def image_data(batch: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return (torch.randn(batch, 3, size, size, generator=generator),
            torch.randint(0, 10, (batch,), generator=generator))


def small_images() -> tuple[torch.Tensor, torch.Tensor]:
    return image_data(size=8)


def width_check(variant: Variant, scheme: str, data, lr: float, widths: list[int] = WIDTHS) -> hpt.CoordCheckResult:
    inputs = data[0]

    def build(width: int) -> torch.nn.Module:
        model = variant.build(width, variant.depth)
        if variant.meta_base:
            with torch.device("meta"):
                base = variant.build(BASE, variant.depth)
        else:
            with torch.random.fork_rng(devices=[]):
                base = variant.build(BASE, variant.depth)
        hpt.parametrize(model, base, scheme, example_inputs=inputs)
        return model

    return hpt.coord_check(build, widths, data=data, optimizer="adam", lr=lr, steps=3, seeds=2)


CASES = [  # (zoo member, data, Adam LR, widths)
    ("mixtral (MoE: fused experts, router)", token_data, 1e-2, WIDTHS),
    ("gpt_neox (head dim named head_size)", token_data, 1e-2, WIDTHS),
    ("gemma3 text (query_pre_attn_scalar, qk-norm)", token_data, 1e-2, WIDTHS),
    ("x-transformers decoder, einsum attention", token_data, 1e-2, WIDTHS),
    ("ResNet BasicBlock, widened", small_images, 1e-2, [16, 32, 64, 128]),  # stage-1 channels x2 (k = 1..8)
    ("ViT, q * self.scale attention", image_data, 2e-3, WIDTHS),
    ("stacked experts (E, d_in, d_out) by einsum", token_data, 1e-2, WIDTHS),
]


@pytest.mark.parametrize("name,data,lr,widths", CASES, ids=[c[0] for c in CASES])
def test_mup_passes_and_sp_fails_the_width_check(name, data, lr, widths):
    variant = BY_NAME[name]
    needs = {"transformers": "transformers", "x-transformers": "x_transformers"}.get(variant.source)
    if needs:
        pytest.importorskip(needs, reason=f"{variant.source} is not installed (pip install -e '.[dev]')")
    mup = width_check(variant, "mup", data(), lr, widths)
    assert mup.verdict == "PASS", mup.summary()
    sp = width_check(variant, "sp", data(), lr, widths)
    assert sp.verdict == "FAIL", sp.summary()


def test_depth_mup_passes_and_mup_fails_the_depth_check_on_a_standard_resnet():
    data = image_data()

    def check(scheme: str) -> hpt.CoordCheckResult:
        def build(blocks: int) -> torch.nn.Module:
            model = StandardResNet(BasicBlock, blocks=blocks, width=2)
            with torch.device("meta"):
                base = StandardResNet(BasicBlock, blocks=1, width=2)
            hpt.parametrize(model, base, scheme, branches="layer*.*.bn2", example_inputs=data[0])
            return model

        return hpt.coord_check(build, [1, 2, 4, 8], axis="depth", data=data, optimizer="adam", lr=1e-2, steps=3,
                               seeds=2)

    depth = check("depth_mup")
    assert depth.verdict == "PASS", depth.summary()
    width_only = check("mup")
    assert width_only.verdict == "FAIL", width_only.summary()
