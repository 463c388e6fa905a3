"""Shared fixtures and numeric helpers: seeds, meta-device bases, log-log slopes."""

from __future__ import annotations

import math
import os
import random

from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def seed() -> int:
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    return 1234


def meta(cls, *args, **kwargs):
    """Build a model on the meta device (a free base)."""
    with torch.device("meta"):
        return cls(*args, **kwargs)


def loglog_slope(sizes, values) -> float:
    """Least-squares slope of log2(value) against log2(size)."""
    x = np.log2(np.asarray(sizes, dtype=float))
    y = np.log2(np.asarray(values, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


def finite(x: float) -> bool:
    return math.isfinite(x)


@pytest.fixture
def hydra_conf():
    """Hydra initialized on the repo's conf/ with the structured configs registered (as the recipes do)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hptransfer.pipeline.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def tiny_gpt_builder(scheme: str):
    """build(width) for coordinate checks: a 1-layer PlainGPT over a 32-wide meta base."""
    from hptransfer import parametrize
    from hptransfer.models import PlainGPT

    def build(width: int):
        model = PlainGPT(d_model=width, n_layer=1, n_head=4, vocab_size=64, block_size=16)
        with torch.device("meta"):
            base = PlainGPT(d_model=32, n_layer=1, n_head=4, vocab_size=64, block_size=16)
        parametrize(model, base, scheme)
        return model

    return build
