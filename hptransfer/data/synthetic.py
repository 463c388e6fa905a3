"""Synthetic classification data: a Gaussian mixture with one component per class."""

from __future__ import annotations

import torch


def gaussian_mixture(n: int, d_in: int = 32, n_classes: int = 10, seed: int = 0,
                     separation: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in ``d_in`` dims with labels: class mean (N(0, separation^2) per coordinate) plus N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, d_in, generator=generator) * separation
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    points = means[labels] + torch.randn(n, d_in, generator=generator)
    return points, labels
