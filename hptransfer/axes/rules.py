"""The rules that move a hyperparameter from the proxy's setting to the target's, as data: what each moves, along
which axis, what it needs measured, and its source. ``hptransfer.axes.transfer`` applies them; docs/rules.md
("Beyond width and depth") explains each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AxisRule:
    name: str
    moves: str  # the hyperparameter
    axis: str  # what differs between proxy and target
    needs: str  # the measurement it needs ("" when none)
    law: str
    source: str


RULES: dict[str, AxisRule] = {rule.name: rule for rule in (
    AxisRule("width_depth", "lr, weight_decay, eps, init", "width, depth", "",
             "the scheme's per-parameter factors (parametrize + param_groups): the tuned value is the base's",
             "Tensor Programs V (muP), VI (Depth-muP); CompleteP"),
    AxisRule("lr_batch", "lr", "batch size",
             "the proxy's optimal LR at >= 3 batch sizes and its gradient noise scale (Fits.batch)",
             "lr* ~ (1 + B_noise / B)^-s with B_noise the proxy's gradient noise scale and s fitted on >= 3 batch "
             "sizes with the square-root rule (1/2 +- 1/4) as its prior: the square-root rule far below the "
             "critical batch, flat far above it (without B_noise: a pure power of B, capped at the critical batch)",
             "Malladi et al. 2022 (square-root rule for Adam); McCandlish et al. 2018 (noise scale, the optimal "
             "step's saturation 1/(1 + B_noise/B)); their combination is this library's, measured in BENCHMARKS "
             "section 13"),
    AxisRule("lr_horizon", "lr", "training tokens", "the proxy's optimal LR at >= 3 horizons (Fits.horizon)",
             "log2 lr* moves by slope x log2(D_target / D_proxy), the slope fitted (LR*(D) = B D^-beta)",
             "Bjorck et al. 2024, Scaling Optimal LR Across Token Horizons"),
    AxisRule("wd_timescale", "weight_decay", "training iterations, LR", "",
             "AdamW's EMA timescale 1/(lr x wd) iterations kept as a fraction of training: "
             "wd_target = wd_proxy x (lr_proxy x T_proxy) / (lr_target x T_target)",
             "Wang & Aitchison 2024, How to set AdamW's weight decay as you scale model and dataset size"),
    AxisRule("schedule_fractions", "warmup_frac, min_lr_frac", "training iterations", "",
             "fractions of training: unchanged (the proxy decays to its own horizon, as the fits were measured)",
             "this library's convention (the horizon fits are measured with each run's schedule to its own end)"),
)}

SQRT_PRIOR = (0.5, 0.25)  # lr ~ B^(1/2) for Adam below the critical batch; sd: Li et al.'s surge and SGD's linear rule
