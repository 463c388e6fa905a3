"""On a CUDA GPU: bf16 autocast and torch.compile of parametrized models (skipped, with the reason shown, on CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hptransfer as hpt
from hptransfer.models import GPT, PlainGPT

from conftest import meta

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


def _steps(model, compile_: bool, steps: int = 3) -> list[float]:
    runner = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(hpt.param_groups(model, lr=3e-3, weight_decay=0.1), fused=True)
    x = torch.randint(0, 96, (8, 64), device="cuda")
    losses = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(runner(x)[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compiled"])
def test_plain_gpt_bf16(compile_):
    torch.manual_seed(0)
    model = PlainGPT(d_model=256, n_layer=4).cuda()
    hpt.parametrize(model, meta(PlainGPT, 64, 2), "completep", branches=["blocks.*.attn", "blocks.*.mlp"],
                    base_head_dim=16)
    losses = _steps(model, compile_)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_compiled_matches_eager_in_bf16():
    torch.manual_seed(0)
    model = GPT(d_model=256, n_layer=4).cuda()
    hpt.parametrize(model, meta(GPT, 64, 2), "completep")
    x = torch.randint(0, 96, (4, 32), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
        eager = model(x).float()
        compiled = torch.compile(model)(x).float()
    assert torch.allclose(eager, compiled, atol=5e-2, rtol=5e-2)
