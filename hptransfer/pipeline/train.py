"""One trainer for proxy and target: CPU or CUDA, bf16 autocast on CUDA, optional torch.compile, warmup +
cosine/linear schedules that keep mu-P's per-group LR ratios, gradient clipping, evaluation, atomic
checkpoints with bit-exact resume on CPU, divergence detection, and DDP / FSDP2 under torchrun.

Read it top to bottom: build -> parametrize -> (wrap) -> param groups -> loop (batch, step, log, eval,
checkpoint) -> result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import nn as hnn
from ..data.datasets import Classification, TokenStream
from ..errors import HptError
from ..models.registry import ModelSpec
from ..optim import build_optimizer, evaluation_weights, training_weights
from ..outputs import output_logits
from . import checkpoint as ckpt

log = logging.getLogger(__name__)


class TrainError(HptError, RuntimeError):
    """A training setup that cannot run (bad schedule, checkpoint from another run, ...)."""


@dataclass
class TrainSettings:
    """How to train (the ``train`` config group). Steps and batch are per run; lr etc. come from HParams."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 4
    compile: bool = False
    device: str | None = None
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end when a run dir is given
    resume: bool = False
    diverge_factor: float = 2.0  # a loss above diverge_factor x the first loss counts as diverged
    parallel: str = "none"  # none | ddp | fsdp2 (under torchrun)


@dataclass
class OptimSettings:
    name: str = "adamw"  # adam | adamw | sgd | adafactor | lion | muon | schedulefree_adamw (hptransfer.optim)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)  # Adam family, Lion, and Muon's AdamW part
    eps: float = 1e-8
    momentum: float = 0.9  # SGD and Muon
    independent_weight_decay: bool = False
    adjust_lr_fn: str = "original"  # Muon's LR adjustment (divided back out relative to the base)


@dataclass
class HParams:
    """The hyperparameters that transfer: tuned on the proxy, reused on the target."""

    lr: float = 3e-3
    warmup_frac: float = 0.05
    init: Any = "rescale"
    multipliers: dict[str, float] = field(default_factory=dict)
    grad_clip: float | None = None  # None: the run's train.grad_clip; a number tunes it with the rest


@dataclass
class TrainResult:
    val_loss: float
    train_loss: float
    steps: int
    diverged: bool
    reason: str
    curve: list[dict[str, float]]
    seconds: float
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_frac: float) -> float:
    """Multiplier of every group's base LR at ``step`` (LambdaLR scales each group from its own LR)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - (1 - min_frac) * progress
    raise TrainError(f"train.schedule={schedule!r}: choose cosine, linear or constant")


def task_loss(output: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a model's output (a tensor or a transformers ModelOutput) against the targets."""
    logits = output_logits(output)  # tensors, and transformers' ModelOutputs
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _wrap(model: nn.Module, parallel: str, device: torch.device) -> nn.Module:
    rank, world = _distributed()
    if world == 1 or parallel == "none":
        return model
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if parallel == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if parallel == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        # Shard the units whose forward actually runs: residual branches when the model has them (a block
        # that is only a container never calls forward, so its unshard hooks would never fire), else the
        # elements of ModuleLists.
        units = [m for m in model.modules() if isinstance(m, hnn.Residual)]
        if not units:
            units = [b for m in model.modules() if m is not model and isinstance(m, nn.ModuleList) for b in m]
        for unit in units:
            fully_shard(unit)
        return fully_shard(model)
    raise TrainError(f"train.parallel={parallel!r}: choose none, ddp or fsdp2")


def _build_optimizer(model: nn.Module, hp: HParams, opt: OptimSettings, device: torch.device) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = {"sgd": {"momentum": opt.momentum}, "muon": {"momentum": opt.momentum, "betas": tuple(opt.betas)},
                              "lion": {"betas": tuple(opt.betas)}, "adafactor": {},
                              "schedulefree_adamw": {"betas": tuple(opt.betas)}}.get(
        opt.name, {"betas": tuple(opt.betas), "fused": device.type == "cuda"})
    return build_optimizer(model, opt.name, lr=hp.lr, weight_decay=opt.weight_decay, eps=opt.eps,
                           adjust_lr_fn=opt.adjust_lr_fn, group_kwargs={
                               "independent_weight_decay": opt.independent_weight_decay}, **kwargs)


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenStream | Classification, settings: TrainSettings,
             device: torch.device, autocast: dict[str, Any]) -> float:
    generator = torch.Generator().manual_seed(10_000 + settings.seed)  # the same validation batches every time
    losses = []
    for _ in range(settings.eval_batches):
        inputs, targets = (t.to(device) for t in data.batch("val", settings.batch_size, settings.seq_len, generator))
        with torch.autocast(**autocast):
            losses.append(float(task_loss(model(inputs), targets)))
    return sum(losses) / len(losses)


def train(spec: ModelSpec, scheme: str, data: TokenStream | Classification, hp: HParams,
          settings: TrainSettings = TrainSettings(), optim: OptimSettings = OptimSettings(), *,
          width: int | None = None, depth: int | None = None, run_dir: Path | None = None,
          on_metrics: Callable[[dict[str, float]], None] | None = None,
          on_end: Callable[[nn.Module], None] | None = None) -> TrainResult:
    """Train the ``spec`` model at (width, depth) under ``scheme`` with hyperparameters ``hp``.

    Returns a TrainResult; a run whose loss becomes non-finite or exceeds ``diverge_factor`` x its first loss
    stops early with ``diverged=True`` and the reason. With ``run_dir`` it writes a checkpoint (``checkpoint.pt``;
    sharded ``checkpoint/`` under FSDP2, see hptransfer.pipeline.checkpoint) and, with ``settings.resume``,
    continues from it bit-exactly (CPU). A process group it started (torchrun) is torn down before it returns.
    ``on_end(model)`` sees the trained model (not called for a diverged run).
    """
    rank, world = _distributed()
    owns_group = world > 1 and settings.parallel != "none" and not dist.is_initialized()
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    autocast = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": device.type == "cuda"}
    torch.manual_seed(settings.seed)
    model = spec.parametrized(scheme, width=width, depth=depth, init=hp.init, multipliers=hp.multipliers or None)
    model.to(device)
    wrapped = _wrap(model, settings.parallel, device)
    optimizer = _build_optimizer(wrapped, hp, optim, device)
    warmup = int(hp.warmup_frac * settings.steps)
    clip = settings.grad_clip if hp.grad_clip is None else hp.grad_clip
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.steps, warmup, settings.schedule, settings.min_lr_frac))
    runner = torch.compile(wrapped) if settings.compile else wrapped
    generator = torch.Generator().manual_seed(settings.seed + 1000 * rank)
    curve: list[dict[str, float]] = []
    start_step, first_loss = 0, None
    sharded = ckpt.is_sharded(settings.parallel, world)
    checkpoint = ckpt.location(run_dir, sharded) if run_dir is not None else None
    fingerprint = _fingerprint(spec, scheme, hp, settings, width, depth)
    if settings.resume and checkpoint is not None and ckpt.exists(checkpoint, sharded):
        try:
            state = ckpt.read_extras(checkpoint, rank, sharded, device)
        except Exception as err:  # torch's readers raise RuntimeError, EOFError, UnpicklingError, ...
            raise TrainError(ckpt.unreadable(checkpoint, err, sharded)) from err
        if state.get("world") != world or state.get("fingerprint") != fingerprint:
            raise TrainError(f"{checkpoint} was written by a different run (model, hyperparameters or world size "
                             "differ); use another run dir or set train.resume=false")
        try:
            ckpt.load(checkpoint, model, optimizer, sharded, device)
        except Exception as err:
            raise TrainError(ckpt.unreadable(checkpoint, err, sharded)) from err
        training_weights(optimizer)  # a schedule-free optimizer was saved holding its evaluation weights
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_step, first_loss, curve = state["step"], state["first_loss"], list(state["curve"])
        if start_step >= settings.steps and curve and "val_loss" in curve[-1]:
            curve.pop()  # a finished run's final evaluation: made again below, identically

    def save(step: int) -> None:
        with evaluation_weights(optimizer):
            ckpt.save(checkpoint, model, optimizer, {
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "step": step, "first_loss": first_loss, "curve": curve, "world": world, "fingerprint": fingerprint},
                rank, sharded)

    tokens_per_step = settings.batch_size * (settings.seq_len if data.task == "lm" else 1) * world
    started = time.perf_counter()
    diverged, reason = False, ""
    train_loss = curve[-1]["train_loss"] if curve else float("nan")  # a resumed run's last loss until it steps
    wrapped.train()
    for step in range(start_step, settings.steps):
        inputs, targets = (t.to(device) for t in data.batch("train", settings.batch_size, settings.seq_len, generator))
        with torch.autocast(**autocast):
            loss = task_loss(runner(inputs), targets)
        train_loss = float(loss.detach())
        first_loss = train_loss if first_loss is None else first_loss
        if not math.isfinite(train_loss) or train_loss > settings.diverge_factor * first_loss:
            diverged = True
            reason = (f"loss {train_loss:.4g} at step {step}" + ("" if not math.isfinite(train_loss) else
                      f" exceeds {settings.diverge_factor:g} x the first loss {first_loss:.4g}"))
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(wrapped.parameters(), clip)
        optimizer.step()
        scheduler.step()
        row = {"step": step + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"] /
               optimizer.param_groups[0].get("lr_scale", 1.0)}
        if settings.eval_every and (step + 1) % settings.eval_every == 0 and step + 1 < settings.steps:
            with evaluation_weights(optimizer):
                row["val_loss"] = evaluate(runner, data, settings, device, autocast)
        curve.append(row)
        if on_metrics is not None and rank == 0:
            on_metrics(row)
        if checkpoint is not None and settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0:
            save(step + 1)
    with evaluation_weights(optimizer):
        val_loss = float("nan") if diverged else evaluate(runner, data, settings, device, autocast)
    if not diverged:
        curve.append({"step": settings.steps, "train_loss": train_loss, "val_loss": val_loss,
                      "lr": curve[-1]["lr"] if curve else hp.lr})
        if on_metrics is not None and rank == 0:
            on_metrics(curve[-1])
        if checkpoint is not None:
            save(settings.steps)
    if on_end is not None and not diverged:  # the trained model, at its evaluation weights
        with evaluation_weights(optimizer):
            on_end(model)
    if owns_group and dist.is_initialized():  # every rank got here: leave no process group for exit to reap
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(val_loss=val_loss, train_loss=train_loss, steps=len(curve), diverged=diverged, reason=reason,
                       curve=curve, seconds=time.perf_counter() - started, tokens=tokens_per_step * settings.steps)


def _fingerprint(spec: ModelSpec, scheme: str, hp: HParams, settings: TrainSettings, width: int | None,
                 depth: int | None) -> str:
    keep = {k: v for k, v in asdict(settings).items() if k not in ("resume", "checkpoint_every", "eval_every", "device")}
    return json.dumps({"spec": asdict(spec), "scheme": scheme, "hp": asdict(hp), "settings": keep, "width": width,
                       "depth": depth}, sort_keys=True, default=str)
