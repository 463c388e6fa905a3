"""Worker for tests/test_optim.py: trains a parametrized model under DDP or FSDP2 on 2 CPU processes (gloo).

Both ranks see the same batch, so the averaged gradient equals the single-process gradient and the result
must equal an unwrapped run. Rank 0 writes the final full parameters and the group LRs to ``out``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F


def build():
    import hptransfer as hpt
    from hptransfer.models import PlainGPT

    torch.manual_seed(0)
    model = PlainGPT(d_model=64, n_layer=4, n_head=4, vocab_size=32, block_size=16)
    with torch.device("meta"):
        base = PlainGPT(d_model=32, n_layer=2, n_head=4, vocab_size=32, block_size=16)
    hpt.parametrize(model, base, "completep", branches=["blocks.*.attn", "blocks.*.mlp"], base_head_dim=8)
    return model


def train(model, steps: int = 3):
    import hptransfer as hpt

    opt = torch.optim.AdamW(hpt.param_groups(model, lr=1e-2, weight_decay=0.1))
    torch.manual_seed(1)
    x = torch.randint(0, 32, (4, 16))
    for _ in range(steps):
        loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def main(rank: int, world: int, mode: str, out: str, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = build()
    if mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        wrapped = fully_shard(model)
    opt = train(wrapped)
    state = {}
    for name, p in model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        state[name] = full.detach().clone()
    if rank == 0:
        torch.save({"state": state, "lrs": [g["lr"] for g in opt.param_groups]}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, out, init_file = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.multiprocessing.spawn(main, args=(2, mode, out, init_file), nprocs=2)
