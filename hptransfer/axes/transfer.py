"""``hpt.transfer``: from the hyperparameters tuned at the proxy's setting to the target's, rule by rule.

Width and depth are the scheme's business (the tuned values are the base's; ``param_groups`` scales them per
parameter). The other axes need measurements: the LR's optimum at three or more batch sizes or horizons on the
proxy (``fit_optimum``), which ``transfer`` extrapolates from the value tuned at the proxy. An axis that differs
without the fit it needs is refused with the runs to add; nothing is guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import HptError
from ..validate import number
from .fit import OptimumFit
from .noise import NoiseScale
from .rules import RULES


class TransferError(HptError, ValueError):
    """A transfer across an axis that lacks the measurements its rule needs (the message says which runs to add)."""


@dataclass(frozen=True)
class Setting:
    """Where a model is trained: its size, its batch (sequences or examples per step) and its steps."""

    width: int | None = None
    depth: int | None = None
    batch_size: int = 1
    steps: int = 1
    seq_len: int = 1  # tokens per sequence (1 for classifiers)

    @property
    def tokens(self) -> int:
        return self.batch_size * self.steps * self.seq_len


@dataclass
class Fits:
    """What the proxy measured: how the LR optimum moves with horizon (x: training tokens) and with batch size (x:
    sequences per step, at the proxy's steps), and the gradient noise scale (the critical batch)."""

    horizon: OptimumFit | None = None
    batch: OptimumFit | None = None
    noise: NoiseScale | float | None = None

    @property
    def critical_batch(self) -> float | None:
        return self.noise.b_noise if isinstance(self.noise, NoiseScale) else self.noise


@dataclass
class Moved:
    """One hyperparameter at the target: its value, an interval where a fit was used, and the rules applied."""

    name: str
    proxy_value: float
    value: float
    interval: tuple[float, float] | None
    rules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return [RULES[r].source for r in self.rules]


@dataclass
class Transferred:
    proxy: Setting
    target: Setting
    values: dict[str, Moved]

    def __getitem__(self, name: str) -> float:
        return self.values[name].value

    def summary(self) -> str:
        lines = [f"transfer from {self.proxy} to {self.target}:"]
        for moved in self.values.values():
            interval = (f" (interval {moved.interval[0]:.4g}..{moved.interval[1]:.4g})" if moved.interval else "")
            lines.append(f"  {moved.name}: {moved.proxy_value:.4g} -> {moved.value:.4g}{interval} by "
                         f"{', '.join(moved.rules) or 'nothing (unchanged)'}" +
                         "".join(f"\n    {note}" for note in moved.notes))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"proxy": m.proxy_value, "target": m.value, "interval": m.interval, "rules": m.rules,
                       "sources": m.sources, "notes": m.notes} for name, m in self.values.items()}


def _check_setting(name: str, setting: Setting) -> None:
    if not isinstance(setting, Setting):
        raise TransferError(f"{name}={setting!r}: give an hptransfer.Setting(width=..., batch_size=..., steps=..., "
                            "seq_len=...)")
    for key in ("batch_size", "steps", "seq_len"):
        number(f"{name}.{key}", getattr(setting, key), minimum=1, integer=True, error=TransferError)


def _note_reach(moved: Moved, fit: OptimumFit, x: float, unit: str) -> None:
    """Say how far past its measured range a fit is carried: its interval covers the scatter of the points, not a
    law that bends outside them (BENCHMARKS.md section 13: the LR optimum over training tokens turns around)."""
    low, high = min(fit.settings), max(fit.settings)
    beyond = math.log2(x / high) if x > high else math.log2(low / x) if x < low else 0.0
    if beyond > 0:
        moved.notes.append(f"the {fit.axis} fit measured {low:.4g}..{high:.4g} {unit} ({math.log2(high / low):.1f} "
                           f"octaves) and is carried {beyond:.1f} octaves beyond to {x:.4g}: its interval assumes the "
                           "power law holds there")


def transfer(hparams: Mapping[str, float], proxy: Setting, target: Setting, fits: Fits | None = None) -> Transferred:
    """The target's hyperparameters from those tuned at ``proxy``.

    Args:
        hparams: the tuned values: ``lr`` (required), and any of ``weight_decay``, ``warmup_frac``,
            ``min_lr_frac``, ``eps`` (others are refused, so that nothing is carried over unexamined).
        proxy, target: the two settings.
        fits: what the proxy measured along each axis that differs (see ``Fits``).

    Raises:
        TransferError: an axis differs and its fit is missing (the message names the runs to add), or an
            unknown hyperparameter.
    """
    _check_setting("proxy", proxy)
    _check_setting("target", target)
    fits = fits or Fits()
    known = ("lr", "weight_decay", "warmup_frac", "min_lr_frac", "eps")
    unknown = sorted(set(hparams) - set(known))
    if unknown or "lr" not in hparams:
        raise TransferError(f"hparams: {'unknown ' + ', '.join(unknown) if unknown else 'lr is missing'}; give lr and "
                            f"any of {', '.join(known[1:])}")
    for name, value in hparams.items():
        number(f"hparams[{name!r}]", value, minimum=0, error=TransferError)
    number("hparams['lr']", hparams["lr"], above=0, error=TransferError)

    lr = Moved("lr", hparams["lr"], hparams["lr"], None)
    if (proxy.width, proxy.depth) != (target.width, target.depth):
        lr.rules.append("width_depth")
    log_low = log_high = 0.0  # the interval, as log2 offsets from the value
    if target.batch_size != proxy.batch_size:
        if fits.batch is None:
            raise TransferError(
                f"the batch size differs (proxy {proxy.batch_size}, target {target.batch_size}) and no batch fit was "
                "given: sweep the proxy's LR at 3 or more batch sizes (e.g. x1/4, x1/2, x1 of the proxy's, same "
                "steps), fit the optima with hptransfer.fit_optimum(batch_sizes, optimal_lrs, axis='batch', "
                "prior=hptransfer.axes.SQRT_PRIOR) and pass fits=Fits(batch=...)")
        effective = float(target.batch_size)
        critical = fits.batch.noise_scale or fits.critical_batch
        if fits.batch.noise_scale is None and critical is not None and effective > critical > proxy.batch_size:
            lr.notes.append(f"the target batch {target.batch_size} is past the critical batch ~{critical:.0f}: with "
                            "a plain power-law fit the LR moves only as far as it (fit with noise_scale= to model "
                            "the saturation)")
            effective = critical
        if critical is not None and target.batch_size > critical:
            lr.notes.append(f"the target batch {target.batch_size} is past the critical batch ~{critical:.0f} (the "
                            "proxy's gradient noise scale): a larger batch buys fewer steps' worth of progress than "
                            "its size")
        ratio, (low, high) = fits.batch.ratio(proxy.batch_size, effective)
        _note_reach(lr, fits.batch, target.batch_size, "sequences per step")
        lr.value *= ratio
        log_low, log_high = log_low + math.log2(low / ratio), log_high + math.log2(high / ratio)
        lr.rules.append("lr_batch")
    tokens_after_batch = proxy.steps * target.batch_size * proxy.seq_len
    if target.tokens != tokens_after_batch or target.seq_len != proxy.seq_len:
        if fits.horizon is None:
            raise TransferError(
                f"the horizon differs (proxy {proxy.tokens:.3g} tokens, target {target.tokens:.3g}) and no horizon fit "
                "was given: sweep the proxy's LR at 3 or more horizons (e.g. x1, x2, x4 of the proxy's steps), fit "
                "the optima with hptransfer.fit_optimum(tokens, optimal_lrs, axis='tokens') and pass "
                "fits=Fits(horizon=...)")
        ratio, (low, high) = fits.horizon.ratio(tokens_after_batch, target.tokens)
        _note_reach(lr, fits.horizon, target.tokens, "tokens")
        lr.value *= ratio
        log_low, log_high = log_low + math.log2(low / ratio), log_high + math.log2(high / ratio)
        lr.rules.append("lr_horizon")
    if log_low or log_high:
        lr.interval = (lr.value * 2.0**log_low, lr.value * 2.0**log_high)
    values = {"lr": lr}

    if "weight_decay" in hparams:
        wd = Moved("weight_decay", hparams["weight_decay"], hparams["weight_decay"], None)
        factor = (lr.proxy_value * proxy.steps) / (lr.value * target.steps)
        if abs(factor - 1) > 1e-12:
            wd.value *= factor
            wd.rules.append("wd_timescale")
            wd.notes.append(f"timescale 1/(lr wd) kept at {1 / max(lr.proxy_value * wd.proxy_value, 1e-300) / proxy.steps:.3g}"
                            " of training" if wd.proxy_value > 0 else "no decay at the proxy: none at the target")
            if lr.interval is not None:
                wd.interval = (wd.value * lr.value / lr.interval[1], wd.value * lr.value / lr.interval[0])
        values["weight_decay"] = wd
    for name in ("warmup_frac", "min_lr_frac", "eps"):
        if name in hparams:
            moved = Moved(name, hparams[name], hparams[name], None)
            if name != "eps" and target.steps != proxy.steps:
                moved.rules.append("schedule_fractions")
            if name == "eps" and (proxy.width, proxy.depth) != (target.width, target.depth):
                moved.rules.append("width_depth")
            values[name] = moved
    return Transferred(proxy, target, values)
