"""Transfer across batch size, horizon and weight decay (hptransfer.axes): the fits recover known exponents within
their intervals, each rule's value is derived here and checked, an axis without its fit is refused with the runs
to add, and the gradient noise scale comes out at its known value."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import hptransfer as hpt
from hptransfer.axes import (SQRT_PRIOR, AxisFitError, Fits, NoiseScaleError, Setting, TransferError, basin_optimum,
                             fit_optimum)


def synthetic_optima(slope: float, noise: float, seed: int, xs=(1, 2, 4, 8, 16, 32)) -> list[float]:
    rng = np.random.default_rng(seed)
    return [2.0 ** (-6 + slope * math.log2(x) + rng.normal(0, noise)) for x in xs]


@pytest.mark.parametrize("slope", [-0.5, -0.2, 0.5])
def test_the_fit_recovers_a_known_exponent_within_its_interval(slope):
    xs = [1, 2, 4, 8, 16, 32]
    fit = fit_optimum(xs, synthetic_optima(slope, 0.2, seed=0), axis="tokens")
    low, high = fit.slope_interval
    assert low <= slope <= high and high - low < 0.5
    assert not (low <= slope + 0.6 <= high)  # the negative control: a wrong exponent is outside
    predicted, (p_low, p_high) = fit.predict(256)
    truth = 2.0 ** (-6 + slope * 8)
    assert p_low <= truth <= p_high and abs(math.log2(predicted / truth)) < 0.6


def test_the_slope_interval_covers_the_truth_about_95_percent_of_the_time():
    hits = 0
    for seed in range(200):
        low, high = fit_optimum([1, 2, 4, 8], synthetic_optima(-0.4, 0.3, seed, xs=(1, 2, 4, 8))).slope_interval
        hits += low <= -0.4 <= high
    assert 0.88 <= hits / 200 <= 1.0


def test_a_prior_pulls_a_noisy_fit_and_leaves_a_precise_one():
    noisy = fit_optimum([1, 2, 4], synthetic_optima(0.0, 0.8, seed=3, xs=(1, 2, 4)), prior=SQRT_PRIOR)
    plain = fit_optimum([1, 2, 4], synthetic_optima(0.0, 0.8, seed=3, xs=(1, 2, 4)))
    assert abs(noisy.slope - 0.5) < abs(plain.slope - 0.5)
    precise = fit_optimum([1, 4, 16, 64, 256], synthetic_optima(0.1, 0.0, seed=0, xs=(1, 4, 16, 64, 256)),
                          prior=SQRT_PRIOR)
    assert abs(precise.slope - 0.1) < 0.1


@pytest.mark.parametrize("settings, optima, words", [
    ([1, 2], [1e-3, 2e-3], "a slope with an interval needs the optimum at 3 or more"),
    ([1, 1, 2], [1e-3, 1e-3, 2e-3], "2 distinct setting"),
    ([1, 2, 4], [1e-3, -1, 2e-3], "positive finite"),
    ([1, 2, 4], [1e-3, 2e-3], "3 settings but 2 optima"),
])
def test_the_fit_refuses_what_cannot_give_a_slope(settings, optima, words):
    with pytest.raises(AxisFitError, match=words):
        fit_optimum(settings, optima)


def exact_fit(slope: float, axis: str) -> hpt.axes.OptimumFit:
    return fit_optimum([1, 2, 4, 8], [2.0 ** (slope * k) for k in range(4)], axis=axis)


PROXY = Setting(width=64, batch_size=16, steps=100, seq_len=64)


def test_same_setting_changes_nothing():
    moved = hpt.transfer({"lr": 3e-3, "weight_decay": 0.1, "warmup_frac": 0.05}, PROXY, PROXY)
    assert {k: m.value for k, m in moved.values.items()} == {"lr": 3e-3, "weight_decay": 0.1, "warmup_frac": 0.05}
    assert all(not m.rules for m in moved.values.values())


def test_the_horizon_rule_moves_the_lr_by_the_fitted_power_and_the_weight_decay_keeps_its_timescale():
    target = Setting(width=64, batch_size=16, steps=800, seq_len=64)
    moved = hpt.transfer({"lr": 4e-3, "weight_decay": 0.1, "warmup_frac": 0.05}, PROXY, target,
                         Fits(horizon=exact_fit(-0.5, "tokens")))
    lr = 4e-3 * 8 ** -0.5  # derived: slope -1/2 over 3 octaves of tokens
    assert moved["lr"] == pytest.approx(lr) and moved.values["lr"].rules == ["lr_horizon"]
    low, high = moved.values["lr"].interval
    assert low < lr < high
    # AdamW's timescale 1/(lr wd) as a fraction of the steps, the same at both settings
    tau_fraction = lambda lr_, wd, steps: 1 / (lr_ * wd) / steps  # noqa: E731
    assert tau_fraction(moved["lr"], moved["weight_decay"], 800) == pytest.approx(tau_fraction(4e-3, 0.1, 100))
    assert tau_fraction(moved["lr"], 0.1, 800) != pytest.approx(tau_fraction(4e-3, 0.1, 100))  # the naive one breaks it
    assert moved["warmup_frac"] == 0.05 and moved.values["warmup_frac"].rules == ["schedule_fractions"]


def test_a_fit_carried_past_its_points_says_how_far():
    tokens = [PROXY.tokens // 8, PROXY.tokens // 4, PROXY.tokens // 2, PROXY.tokens]
    fit = fit_optimum(tokens, [2.0**-6] * 4, axis="tokens")
    far = hpt.transfer({"lr": 4e-3}, PROXY, Setting(width=64, batch_size=16, steps=800, seq_len=64), Fits(horizon=fit))
    (note,) = far.values["lr"].notes
    assert "(3.0 octaves) and is carried 3.0 octaves beyond" in note
    inside = hpt.transfer({"lr": 4e-3}, PROXY, Setting(width=64, batch_size=16, steps=50, seq_len=64),
                          Fits(horizon=fit))
    assert inside.values["lr"].notes == []  # the control: 50 steps lies between the fit's points


def test_the_batch_rule_and_the_critical_batch():
    target = Setting(width=64, batch_size=128, steps=100, seq_len=64)
    fit = exact_fit(0.5, "batch")
    moved = hpt.transfer({"lr": 1e-3}, PROXY, target, Fits(batch=fit))
    assert moved["lr"] == pytest.approx(1e-3 * 8**0.5) and moved.values["lr"].rules == ["lr_batch"]
    capped = hpt.transfer({"lr": 1e-3}, PROXY, target, Fits(batch=fit, noise=32.0))
    assert capped["lr"] == pytest.approx(1e-3 * 2**0.5)  # moves only to the critical batch, 2x the proxy's
    assert "past the critical batch" in capped.values["lr"].notes[0]


def test_the_noise_scale_law_saturates_past_the_critical_batch():
    """lr* = c (1 + B_noise/B)^-1/2: fitted on batches 2..8 around B_noise = 8, it recovers the exponent, and from
    B = 8 to B = 800 it moves the LR by sqrt(2 / 1.01) (derived), where a pure power of B would move it 10x."""
    b_noise = 8.0
    batches = [2, 4, 8]
    optima = [1e-3 * (1 + b_noise / b) ** -0.5 for b in batches]
    fit = fit_optimum(batches, optima, axis="batch", noise_scale=b_noise)
    assert fit.slope == pytest.approx(0.5, abs=1e-9)
    ratio, _ = fit.ratio(8, 800)
    assert ratio == pytest.approx((2 / 1.01) ** 0.5)
    plain, _ = fit_optimum(batches, optima, axis="batch").ratio(8, 800)
    assert plain > 3 * ratio  # the negative control: without the noise scale the LR runs away
    moved = hpt.transfer({"lr": 1e-3}, Setting(batch_size=8), Setting(batch_size=800), Fits(batch=fit))
    assert moved["lr"] == pytest.approx(1e-3 * ratio) and "past the critical batch ~8" in moved.values["lr"].notes[0]


@pytest.mark.parametrize("target, words", [
    (Setting(width=64, batch_size=16, steps=800, seq_len=64), "sweep the proxy's LR at 3 or more horizons"),
    (Setting(width=64, batch_size=128, steps=100, seq_len=64), "sweep the proxy's LR at 3 or more batch sizes"),
])
def test_an_axis_without_its_fit_is_refused_with_the_runs_to_add(target, words):
    with pytest.raises(TransferError, match=words):
        hpt.transfer({"lr": 1e-3}, PROXY, target)


@pytest.mark.parametrize("hparams, words", [
    ({"lr": 1e-3, "momentum": 0.9}, "unknown momentum"), ({"weight_decay": 0.1}, "lr is missing"),
    ({"lr": -1e-3}, "hparams\\['lr'\\]=-0.001"), ({"lr": 1e-3, "weight_decay": float("nan")}, "weight_decay"),
])
def test_bad_hyperparameters_are_refused(hparams, words):
    with pytest.raises(TransferError, match=words):
        hpt.transfer(hparams, PROXY, PROXY)


def test_a_bad_setting_is_refused():
    with pytest.raises(TransferError, match="target.steps=0"):
        hpt.transfer({"lr": 1e-3}, PROXY, Setting(width=64, batch_size=16, steps=0, seq_len=64))
    with pytest.raises(TransferError, match="give an hptransfer.Setting"):
        hpt.transfer({"lr": 1e-3}, PROXY, {"steps": 100})


class Linear(nn.Module):
    """loss = mean_i theta . z_i: the per-example gradient is z_i = g + noise, so B_noise = d sigma^2 / |g|^2."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(d))


def test_the_gradient_noise_scale_comes_out_at_its_known_value():
    d, sigma = 50, 2.0
    g = torch.full((d,), 0.5)
    known = d * sigma**2 / float(g.pow(2).sum())  # 16
    generator = torch.Generator().manual_seed(0)

    def batch(n: int) -> torch.Tensor:
        return g + sigma * torch.randn(n, d, generator=generator)

    pairs = [(batch(4), batch(64)) for _ in range(400)]
    scale = hpt.gradient_noise_scale(Linear(d), lambda model, z: (z @ model.theta).mean(), pairs, 4, 64)
    assert abs(math.log(scale.b_noise / known)) < math.log(1.25)
    with pytest.raises(NoiseScaleError, match="0 < small < big"):
        hpt.gradient_noise_scale(Linear(d), lambda model, z: (z @ model.theta).mean(), pairs, 64, 4)


# ---- the pipeline: the horizon sweeps, the transfer, the report ------------------------------------------------
RECIPE = ["experiment=smoke", "coord_check.enabled=false", "proxy.sizes=[32]", "train.steps=8",
          "sweep.log2_lr_min=-9", "sweep.log2_lr_max=-3", "sweep.log2_lr_step=2"]


def mutransfer(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[1] / "recipes" / "mutransfer.py"
    return subprocess.run([sys.executable, str(script), *RECIPE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})


@pytest.mark.slow
def test_the_recipe_sweeps_horizons_and_trains_the_longer_target_at_the_moved_lr(tmp_path):
    out = tmp_path / "run"
    proc = mutransfer(["axes.target_steps=32", "axes.horizons=[0.25,0.5,1.0]", "axes.seeds=[0,1]",
                       "optim.weight_decay=0.1", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    axes = json.loads((out / "axes.json").read_text())
    assert axes["fits"]["horizon"]["settings"] == [2 * 8 * 32, 4 * 8 * 32, 8 * 8 * 32]  # tokens of 2, 4, 8 steps
    # each optimum is the basin of both seeds' sweeps in the ledger, and the fit is weighted by its error
    ledger = f"sqlite:///{out / 'trials.db'}"
    for steps, basin, optimum in zip((2, 4, 8), axes["basins"]["horizon"], axes["fits"]["horizon"]["optima"]):
        rows = {}
        for seed in (0, 1):
            study = optuna.load_study(study_name=f"axes-horizon-{steps}-seed{seed}-32", storage=ledger)
            for t in study.trials:
                rows.setdefault(math.log2(t.user_attrs["lr"]), []).append(t.value if t.value is not None else math.nan)
        xs = sorted(rows)
        again = basin_optimum(xs, [rows[x] for x in xs])
        assert basin["log2"] == pytest.approx(again.log2) and basin["se"] == pytest.approx(again.se)
        assert optimum == pytest.approx(2.0 ** basin["log2"])
    assert axes["fits"]["horizon"]["se"] == [b["se"] for b in axes["basins"]["horizon"]]
    moved, transfer = axes["transfer"], json.loads((out / "transfer.json").read_text())
    slope = axes["fits"]["horizon"]["slope"]
    assert moved["lr"]["target"] == pytest.approx(moved["lr"]["proxy"] * 4**slope)  # derived: 2 octaves of tokens
    assert transfer["lr"] == pytest.approx(moved["lr"]["target"])
    assert moved["weight_decay"]["target"] == pytest.approx(
        0.1 * moved["lr"]["proxy"] * 8 / (moved["lr"]["target"] * 32))  # the timescale rule
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 32  # the target trained its own 32 steps
    report = (out / "report.md").read_text()
    assert "Beyond width" in report and (out / "axes_horizon.png").exists()


@pytest.mark.slow
def test_the_recipe_moves_the_lr_to_a_larger_batch_with_the_measured_noise_scale(tmp_path):
    out = tmp_path / "run"
    proc = mutransfer(["axes.target_batch_size=32", "axes.batch_sizes=[0.25,0.5,1.0]", f"hydra.run.dir={out}"],
                      tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    axes = json.loads((out / "axes.json").read_text())
    noise, fit = axes["noise_scale"], axes["fits"]["batch"]
    assert fit["settings"] == [2, 4, 8] and noise["b_noise"] > 0 and fit["noise_scale"] == noise["b_noise"]
    derived = (1 + noise["b_noise"] / 32) ** -fit["slope"] / (1 + noise["b_noise"] / 8) ** -fit["slope"]
    assert axes["transfer"]["lr"]["target"] == pytest.approx(axes["transfer"]["lr"]["proxy"] * derived)
    assert json.loads((out / "transfer.json").read_text())["lr"] == pytest.approx(axes["transfer"]["lr"]["target"])


def test_the_recipe_refuses_a_longer_target_without_horizon_sweeps(tmp_path):
    proc = mutransfer(["axes.target_steps=32", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 3 and "set axes.horizons" in proc.stderr
    assert not (tmp_path / "run" / "trials.db").exists()
