"""Checkpoints of every registered optimizer (the Muon + AdamW hybrid included): written, read into a fresh
model and optimizer, and training continues exactly as if never interrupted, in both formats (one file, and
torch.distributed.checkpoint's sharded directory, here in one process)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hptransfer as hpt
from hptransfer.models import GPT
from hptransfer.pipeline import checkpoint as ckpt

VOCAB = 32
BATCHES = [torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(i)) for i in range(6)]


def gpt(width: int, device: str = "cpu") -> GPT:
    with torch.device(device):
        return GPT(d_model=width, n_layer=2, n_head=2, vocab_size=VOCAB, block_size=8)


def setup(name: str) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = gpt(64)
    hpt.parametrize(model, gpt(32, "meta"), "mup", delta=gpt(48, "meta"))
    extra = {"sgd": {"momentum": 0.9}}.get(name, {})  # plain SGD keeps no state to restore
    return model, hpt.build_optimizer(model, name, lr=1e-3, weight_decay=0.1, **extra)


def steps(model: GPT, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    for batch in batches:
        opt.zero_grad()
        F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # DCP in one process
@pytest.mark.parametrize("sharded", [False, True], ids=["file", "dcp"])
@pytest.mark.parametrize("name", ["adamw", "muon", "lion", "adafactor", "sgd"])
def test_save_load_continues_exactly(tmp_path, name, sharded):
    model, opt = setup(name)
    steps(model, opt, BATCHES[:3])
    path = ckpt.location(tmp_path, sharded)
    ckpt.save(path, model, opt, {"step": 3}, rank=0, sharded=sharded)
    assert ckpt.exists(path, sharded)
    steps(model, opt, BATCHES[3:])

    fresh, fresh_opt = setup(name)
    ckpt.load(path, fresh, fresh_opt, sharded, torch.device("cpu"))
    assert ckpt.read_extras(path, 0, sharded, torch.device("cpu"))["step"] == 3
    if name == "muon":  # the hybrid's inner optimizers see the loaded groups and state
        assert all(inner.state is fresh_opt.state for inner in fresh_opt._inner)
    steps(fresh, fresh_opt, BATCHES[3:])
    for (key, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), key

    # negative control: the same weights with a fresh optimizer state continue differently
    restored, restored_opt = setup(name)
    ckpt.load(path, restored, restored_opt, sharded, torch.device("cpu"))
    unrestored, unrestored_opt = setup(name)
    unrestored.load_state_dict(restored.state_dict())
    steps(unrestored, unrestored_opt, BATCHES[3:])
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), unrestored.state_dict().values()))
