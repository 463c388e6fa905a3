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
    parametrize: dict[str, Any] = field(default_factory=dict)  # branches / readout / base_head_dim for plain models


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


@dataclass
class DataConfig:
    """kind: text (built-in or data.path), tokens (memmapped uint16/uint32 file), gaussian_mixture."""

    kind: str = "text"
    path: Optional[str] = None
    val_fraction: float = 0.1
    dtype: str = "uint16"
    vocab_size: Optional[int] = None
    n_train: int = 4096
    n_val: int = 1024
    d_in: int = 32
    n_classes: int = 10
    separation: float = 2.0  # gaussian_mixture: std of the class means per coordinate (noise std is 1)
    seed: int = 0


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3  # used when nothing was tuned (transfer.py without a tune dir)
    warmup_frac: float = 0.05
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    momentum: float = 0.9
    independent_weight_decay: bool = False
    adjust_lr_fn: str = "original"


@dataclass
class TrainConfig:
    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    schedule: str = "cosine"
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 4
    compile: bool = False
    device: Optional[str] = None
    seed: int = 0
    checkpoint_every: int = 0
    resume: bool = False
    diverge_factor: float = 2.0
    parallel: str = "none"


@dataclass
class SweepConfig:
    kind: str = "lr_grid"
    log2_lr_min: float = -12.0
    log2_lr_max: float = -4.0
    log2_lr_step: float = 1.0
    n_trials: int = 20
    space: dict[str, list[float]] = field(default_factory=dict)
    startup_trials: int = 0
    storage: Optional[str] = None
    study: str = "hptransfer"
    seed: int = 0
    heartbeat_s: float = 5.0
    stale_after_s: float = 30.0


@dataclass
class ProxyConfig:
    axis: str = "width"  # width | depth: which dimension the proxies shrink
    sizes: list[int] = field(default_factory=lambda: [64, 128])


@dataclass
class CoordStageConfig:
    enabled: bool = True
    sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    steps: int = 3
    seeds: int = 2
    batch_size: int = 1
    seq_len: int = 8
    lr: float = 1e-2


@dataclass
class TargetCheckConfig:
    """mutransfer.py: also train the target at the transferred LR times 2^octave for each octave (a small direct
    sweep, to show in the report that the transferred LR is the target's optimum); off by default (it costs one
    target run per point)."""

    enabled: bool = False
    octaves: list[float] = field(default_factory=lambda: [-1.0, 1.0])


@dataclass
class AxesConfig:
    """mutransfer.py: a target trained for other steps or another batch than the proxy (train.steps,
    train.batch_size). The proxy's LR is swept at each of ``horizons`` x train.steps and ``batch_sizes`` x
    train.batch_size (the LR grid of ``sweep``, on the largest proxy, once per seed of ``seeds``), each optimum
    taken as the vertex of a parabola through every seed's losses near the best LR (with its standard error,
    ``hptransfer.axes.basin_optimum``), the optimum's power law fitted with those errors, and
    hptransfer.transfer moves the LR and weight decay to the target's setting (docs/rules.md, "Beyond width")."""

    target_steps: Optional[int] = None  # default: train.steps
    target_batch_size: Optional[int] = None  # default: train.batch_size
    horizons: list[float] = field(default_factory=list)  # e.g. [0.25, 0.5, 1.0]: needed when the steps differ
    batch_sizes: list[float] = field(default_factory=list)  # e.g. [0.25, 0.5, 1.0]: needed when the batch differs
    seeds: list[int] = field(default_factory=list)  # each sweep repeated per seed (default: train.seed only)
    window: float = 1.0  # octaves either side of a sweep's best LR that its basin parabola is fitted on


@dataclass
class LadderConfig:
    """recipes/scaling.py: proxies trained with the same hyperparameters; the target is model.width/depth."""

    sizes: list[int] = field(default_factory=lambda: [32, 48, 64, 96, 128])
    eval_points: int = 6  # validation losses logged along training (for the width-limit analysis)
    drop_early_fraction: float = 0.1


@dataclass
class PipelineConfig:
    """tune.py, transfer.py and mutransfer.py: model/scheme/data/optim/train/sweep/logger + proxy and stages."""

    model: ModelConfig = field(default_factory=ModelConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    coord_check: CoordStageConfig = field(default_factory=CoordStageConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    target_check: TargetCheckConfig = field(default_factory=TargetCheckConfig)
    axes: AxesConfig = field(default_factory=AxesConfig)
    name: str = "mutransfer"
    tune_dir: Optional[str] = None  # transfer.py: the tune run dir whose tune.json holds the chosen LR
    lr: Optional[float] = None  # transfer.py: an explicit LR instead of a tune dir
    # mutransfer.py, tune.py: go on with the unfinished run of the same command (hptransfer.pipeline.rundir)
    resume: bool = True


def register_configs() -> None:
    """Register every schema with Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="coord_check_schema", node=CoordCheckConfig)
    store.store(name="pipeline_schema", node=PipelineConfig)
