"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"), measured on
the proxy: the batch size past which a larger batch stops buying proportionally fewer steps.

A gradient averaged over B examples has E|G_B|^2 = |G|^2 + tr(Sigma) / B, so two batch sizes give unbiased
estimates of the true gradient's squared norm and of the per-example noise (their Appendix A.1):
|G|^2 = (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small) and
tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big); B_noise = tr(Sigma) / |G|^2. Each estimate
is noisy, so the ratio is taken of their averages over several batch pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import HptError


class NoiseScaleError(HptError, ValueError):
    """The gradient noise scale could not be estimated (batch sizes, too few pairs, a zero gradient)."""


@dataclass
class NoiseScale:
    """B_noise = tr(Sigma) / |G|^2 in the batch's unit (sequences or examples), with its two ingredients."""

    b_noise: float
    grad_sq: float
    trace: float
    small: int
    big: int
    pairs: int


def _grad_sq(model: nn.Module, loss: torch.Tensor) -> float:
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    return float(sum(g.double().pow(2).sum() for g in grads if g is not None))


def gradient_noise_scale(model: nn.Module, loss_fn: Callable[[nn.Module, tuple], torch.Tensor],
                         batches: Iterable[tuple[tuple, tuple]], small: int, big: int) -> NoiseScale:
    """Estimate B_noise from (small batch, big batch) pairs.

    Args:
        loss_fn: the mean loss of ``model`` on a batch.
        batches: pairs (small_batch, big_batch) of ``small`` and ``big`` examples each (independent draws).
    """
    if not (isinstance(small, int) and isinstance(big, int) and 0 < small < big):
        raise NoiseScaleError(f"small={small!r}, big={big!r}: give two batch sizes with 0 < small < big")
    sq_small, sq_big = [], []
    for small_batch, big_batch in batches:
        sq_small.append(_grad_sq(model, loss_fn(model, small_batch)))
        sq_big.append(_grad_sq(model, loss_fn(model, big_batch)))
    if len(sq_small) < 2:
        raise NoiseScaleError(f"{len(sq_small)} batch pair(s): the estimate needs several (10 or more is usual)")
    mean_small, mean_big = sum(sq_small) / len(sq_small), sum(sq_big) / len(sq_big)
    grad_sq = (big * mean_big - small * mean_small) / (big - small)
    trace = (mean_small - mean_big) / (1 / small - 1 / big)
    if not grad_sq > 0 or not math.isfinite(grad_sq):
        raise NoiseScaleError(f"the true gradient's squared norm came out {grad_sq:.3g} (noise dominates at these "
                              "batch sizes): use more pairs, or a larger big batch")
    return NoiseScale(trace / grad_sq, grad_sq, trace, small, big, len(sq_small))
