"""Worker for tests/test_optim.py: trains a parametrized model under DDP or FSDP2 on 2 CPU processes (gloo).

Both ranks see the same batch, so the averaged gradient equals the single-process gradient and the result
must equal an unwrapped run. One launch trains a fresh model with each optimizer in ``OPTIMIZERS``; rank 0
writes, per optimizer, the final full parameters and the group LRs, or the error building it raised.

Modes: ``ddp``, ``fsdp2``, and ``fsdp2-local``, a negative control in which Muon orthogonalizes each rank's
shard of a matrix on its own instead of the whole matrix (what a shard-unaware Muon would do).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.optim._muon as muon

OPTIMIZERS = ("adamw", "muon", "lion", "schedulefree_adamw", "adafactor")
NS_COEFFICIENTS = (muon.DEFAULT_A, muon.DEFAULT_B, muon.DEFAULT_C)  # torch.optim.Muon's defaults


def newton_schulz_fp32(grad: torch.Tensor, coefficients=NS_COEFFICIENTS, steps: int = muon.DEFAULT_NS_STEPS,
                       eps: float = muon.EPS) -> torch.Tensor:
    """torch.optim.Muon's orthogonalization in float32 instead of bfloat16. The sharded run computes its
    matrix products in another order, and bf16 rounding amplified by five iterations would hide a real
    difference under a 5-10% noise floor; in fp32 the two agree to a few 1e-3."""
    x = grad.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def shard_local_newton_schulz(grad, coefficients=NS_COEFFICIENTS, steps: int = muon.DEFAULT_NS_STEPS,
                              eps: float = muon.EPS):
    """The wrong rule, for the negative control: orthogonalize only this rank's rows of a sharded matrix."""
    from torch.distributed.tensor import DTensor

    if not isinstance(grad, DTensor):
        return newton_schulz_fp32(grad, coefficients, steps, eps)
    local = newton_schulz_fp32(grad.to_local(), coefficients, steps, eps)
    return DTensor.from_local(local, grad.device_mesh, grad.placements, shape=grad.shape, stride=grad.stride())


def use_newton_schulz(function) -> None:
    """Swap torch.optim.Muon's orthogonalization (its module-level helper) for ``function``."""
    if not hasattr(muon, "_zeropower_via_newtonschulz"):
        raise RuntimeError("torch.optim._muon._zeropower_via_newtonschulz is gone: update this test's patch")
    muon._zeropower_via_newtonschulz = function


def build():
    import hptransfer as hpt
    from hptransfer.models import PlainGPT

    torch.manual_seed(0)
    model = PlainGPT(d_model=64, n_layer=4, n_head=4, vocab_size=32, block_size=16)
    with torch.device("meta"):
        base = PlainGPT(d_model=32, n_layer=2, n_head=4, vocab_size=32, block_size=16)
    hpt.parametrize(model, base, "completep", branches=["blocks.*.attn", "blocks.*.mlp"], base_head_dim=8)
    return model


def train(model, name: str = "adamw", steps: int = 3):
    import hptransfer as hpt

    opt = hpt.build_optimizer(model, name, lr=1e-2, weight_decay=0.1)
    torch.manual_seed(1)
    x = torch.randint(0, 32, (4, 16))
    for _ in range(steps):
        loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def _wrap(model, mode: str):
    if mode == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    return fully_shard(model)


def main(rank: int, world: int, mode: str, out: str, init_file: str) -> None:
    from hptransfer.errors import SchemeError

    use_newton_schulz(shard_local_newton_schulz if mode == "fsdp2-local" else newton_schulz_fp32)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    for name in OPTIMIZERS:
        model = build()
        wrapped = _wrap(model, mode)
        try:
            opt = train(wrapped, name)
        except SchemeError as err:  # a refusal must come before any step, on every rank alike
            results[name] = {"error": str(err)}
            continue
        state = {}
        for param_name, p in model.named_parameters():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            state[param_name] = full.detach().clone()
        results[name] = {"state": state, "lrs": [g["lr"] for g in opt.param_groups]}
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, out, init_file = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.multiprocessing.spawn(main, args=(2, mode, out, init_file), nprocs=2)
