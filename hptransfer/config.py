"""Structured-config schemas for the Hydra recipes, registered in one place (recipes and tests call it).

The YAML files under ``conf/`` fill these schemas; a typo in a key or a wrong type fails at compose time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ModelConfig:
    """A reference model family at a target size and its base (proxy) size."""

    family: str = "gpt"  # gpt | resmlp | mlp (hptransfer.models.FAMILIES)
    width: int = 256
    depth: int = 2
    base_width: int = 128
    base_depth: int = 2
    options: dict[str, Any] = field(default_factory=dict)  # passed to the model's constructor


@dataclass
class SchemeConfig:
    name: str = "mup"  # sp | mup | depth_mup | completep
    multipliers: dict[str, float] = field(
        default_factory=lambda: {"output": 1.0, "input": 1.0, "attn": 1.0, "branch": 1.0})
    init: Any = "rescale"  # "rescale", "keep" or a float sigma


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "hptransfer"
    group: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; default: $WANDB_MODE, else offline without a key


@dataclass
class CoordCheckConfig:
    """recipes/coord_check.py: sizes are widths (axis=width) or depths (axis=depth)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    axis: str = "width"
    sizes: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    optimizer: str = "adamw"
    lr: float = 1e-2
    steps: int = 3
    seeds: int = 3
    stat: str = "rms"
    batch_size: int = 1  # mu-P's predictions need width >> tokens per step: keep the probe batch small
    seq_len: int = 8
    fast: bool = False
    flat: float = 0.15
    device: Optional[str] = None
    data_seed: int = 0


def register_configs() -> None:
    """Register every schema with Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="coord_check_schema", node=CoordCheckConfig)
