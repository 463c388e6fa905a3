"""mup is the oracle: same weights, same steps, same outputs (TP5 Table 8 in both)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hptransfer as hpt

mup = pytest.importorskip("mup", reason="mup is a dev dependency: pip install -e .[dev]")

D_IN, D_OUT = 16, 5


class MupMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D_IN, width)
        self.fc2 = nn.Linear(width, width)
        self.readout = mup.MuReadout(width, D_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class TorchMLP(MupMLP):
    """The same model as a user writes it without mup: the readout is a plain nn.Linear."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.readout = nn.Linear(width, D_OUT)


def _pair(width: int, base_width: int, scheme: str = "mup"):
    with torch.device("meta"):
        mup_base, torch_base = MupMLP(base_width), TorchMLP(base_width)
    reference = MupMLP(width)
    mup.set_base_shapes(reference, mup_base)
    ours = TorchMLP(width)
    hpt.parametrize(ours, torch_base, scheme, init="keep")
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _train(model, opt, steps: int, data) -> list[torch.Tensor]:
    x, y = data
    outs = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        outs.append(model(x).detach())
    return outs


OPTIMIZERS = {
    # name: (mup optimizer, torch optimizer, param_groups kwargs, lr)
    "adam": (mup.MuAdam, torch.optim.Adam, dict(optimizer="adam"), 3e-3),
    "adamw_wd": (mup.MuAdamW, torch.optim.AdamW, dict(optimizer="adamw", weight_decay=0.1), 3e-3),
    "sgd": (mup.MuSGD, torch.optim.SGD, dict(optimizer="sgd"), 0.05),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_trains_identically_to_mup(name):
    mup_opt, torch_opt, kwargs, lr = OPTIMIZERS[name]
    reference, ours = _pair(width=256, base_width=64)
    data = (torch.randn(32, D_IN), torch.randint(0, D_OUT, (32,)))
    assert torch.allclose(reference(data[0]), ours(data[0]), atol=1e-6)
    wd = kwargs.get("weight_decay", 0.0)
    ref_opt = mup_opt(reference.parameters(), lr=lr, weight_decay=wd)
    # mup does not scale Adam's epsilon; compare like for like.
    our_opt = torch_opt(hpt.param_groups(ours, lr=lr, scale_eps=False, **kwargs))
    ref_out = _train(reference, ref_opt, 6, data)
    our_out = _train(ours, our_opt, 6, data)
    for step, (a, b) in enumerate(zip(ref_out, our_out)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"step {step}: max diff {(a - b).abs().max()}"
    # the models moved: the comparison is not of two untrained copies
    assert (ref_out[-1] - ref_out[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_negative_control_sp_differs_from_mup(name):
    """The same comparison with scheme='sp' must fail, or the test above proves nothing."""
    mup_opt, torch_opt, kwargs, lr = OPTIMIZERS[name]
    reference, ours = _pair(width=256, base_width=64, scheme="sp")
    data = (torch.randn(32, D_IN), torch.randint(0, D_OUT, (32,)))
    ref_out = _train(reference, mup_opt(reference.parameters(), lr=lr), 3, data)
    our_out = _train(ours, torch_opt(hpt.param_groups(ours, lr=lr, scale_eps=False, **kwargs)), 3, data)
    assert (ref_out[-1] - our_out[-1]).abs().max() > 1e-3
