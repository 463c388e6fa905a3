"""Training checkpoints that resume bit-for-bit: one file on one process or under DDP, sharded under FSDP2.

- Unsharded (``checkpoint.pt``): rank 0 writes the full model and optimizer state with the rest of the run's
  state, to a temporary file that then replaces the old one.
- Sharded (``checkpoint/``, FSDP2 under torchrun): ``torch.distributed.checkpoint`` writes each rank's shards
  of the model and optimizer (``get_state_dict`` / ``set_state_dict``, so the files do not depend on how the
  model was sharded), and each rank adds its own ``extras-<rank>.pt`` (its data generator, RNG, scheduler,
  step and curve). The new checkpoint is written next to the old one and swapped in after every rank is done,
  so a run killed while saving still has the previous checkpoint.

The parametrization is not in the state: its multipliers and attention scales live on the modules, its
per-parameter LR factors in the optimizer's param groups, which are saved with the optimizer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

FILE = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the one before the last (unsharded): what a corrupt last one falls back to
SHARDED = "checkpoint"


def is_sharded(parallel: str, world: int) -> bool:
    """Whether a run writes the sharded format: FSDP2 across more than one process."""
    return parallel == "fsdp2" and world > 1


def location(run_dir: Path, sharded: bool) -> Path:
    return run_dir / (SHARDED if sharded else FILE)


def exists(path: Path, sharded: bool) -> bool:
    if not sharded:
        return path.exists()
    return (path / ".metadata").exists() or (_old(path) / ".metadata").exists()


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def _barrier(sharded: bool) -> None:
    if sharded and dist.is_initialized():
        dist.barrier()


def save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, extras: dict[str, Any], rank: int,
         sharded: bool) -> None:
    """Write a checkpoint; ``extras`` is this rank's non-tensor state (all ranks call this when sharded)."""
    if not sharded:
        if rank == 0:
            tmp = path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extras}, tmp)
            if path.exists():
                os.replace(path, path.with_name(PREVIOUS))
            os.replace(tmp, path)
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = path.with_name(path.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier(sharded)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    torch.save(extras, tmp / f"extras-{rank}.pt")
    _barrier(sharded)
    if rank == 0:  # swap: a kill between the two renames leaves the old checkpoint at <name>.old
        if path.exists():
            shutil.rmtree(_old(path), ignore_errors=True)
            os.replace(path, _old(path))
        os.replace(tmp, path)
        shutil.rmtree(_old(path), ignore_errors=True)
    _barrier(sharded)


def unreadable(path: Path, err: BaseException, sharded: bool) -> str:
    """The message for a checkpoint that cannot be read: its path, the reader's reason, and the two ways on."""
    reason = (str(err).strip().splitlines() or [""])[0][:200] or "no detail"
    previous = path.with_name(PREVIOUS)
    message = f"checkpoint {path} cannot be read ({type(err).__name__}: {reason}); it was cut short or overwritten. "
    if not sharded and previous.exists():
        return message + (f"To resume from the previous checkpoint: `mv {previous} {path}`, then run the same "
                          "command again; to restart the target from step 0: delete both files, or set "
                          "train.resume=false")
    return message + f"To restart the target from step 0: delete {path}, or set train.resume=false"


def read_extras(path: Path, rank: int, sharded: bool, device: torch.device) -> dict[str, Any]:
    """This rank's non-tensor state (read first, to refuse another run's checkpoint before loading weights)."""
    if not sharded:
        state = torch.load(path, weights_only=True, map_location=device)
        return {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    return torch.load(_complete(path) / f"extras-{rank}.pt", weights_only=True, map_location=device)


def _complete(path: Path) -> Path:
    return path if (path / ".metadata").exists() else _old(path)


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool, device: torch.device) -> None:
    """Restore model and optimizer in place (every rank calls this when sharded)."""
    if not sharded:
        state = torch.load(path, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(_complete(path)))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
