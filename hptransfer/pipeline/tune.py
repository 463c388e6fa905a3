"""Sweeps on the proxy over an Optuna study (the trials ledger), and picking the optimum.

The ledger is an Optuna study per proxy size: SQLite in the run dir by default, or a PostgreSQL URL to share
one sweep between many workers (hptransfer.pipeline.ledger: how workers share it and survive being killed). LR sweeps
are a grid on log2 LR, enqueued as fixed trials; multi-hyperparameter searches use TPE. Running the same
command again finishes a killed sweep: finished grid points are never repeated, a trial killed mid-run is
run again. A diverged trial is recorded as failed with its reason and the sweep goes on. The best LR is the interpolated optimum (a parabola through the grid
minimum and its neighbours in log2 LR), not just the grid point.

The multi-hyperparameter search (``kind: search``, TP5's full muTransfer: the LR together with the mu-P
multipliers, init sigma, warmup and clip threshold) spends a trial budget per proxy size with Optuna's TPE.
Every trial records its full assignment (``assignment``: the HParams it trained with). A trial whose worker
died is re-run with the same assignment (enqueued again, marked ``retry_of``) before the sampler proposes new
ones, and only finished or diverged trials count against the budget.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import HptError
from .ledger import (INTERRUPTED, fail_dead_local_workers, is_interrupted, ledger_lock, open_storage, retry_races,
                     work_grid, worker_id)
from .train import HParams, TrainResult

log = logging.getLogger(__name__)


class TuneError(HptError, ValueError):
    """A sweep that cannot run: a ledger from another experiment, an empty grid, no finished trial."""


@dataclass
class SweepSettings:
    """The ``sweep`` config group."""

    kind: str = "lr_grid"  # lr_grid | search (``random``: its old name)
    log2_lr_min: float = -12.0
    log2_lr_max: float = -4.0
    log2_lr_step: float = 1.0  # 1: octave grid; 0.5: half-octave
    n_trials: int = 20  # search: the trial budget per proxy size
    space: dict[str, list[float]] = field(default_factory=dict)  # search: name -> [low, high], log-uniform
    startup_trials: int = 0  # search: random trials before TPE models the losses (0: a third of n_trials, 3..10)
    storage: str | None = None  # default: sqlite:///<run dir>/trials.db
    study: str = "hptransfer"
    seed: int = 0
    heartbeat_s: float = 5.0  # a running trial's heartbeat period
    stale_after_s: float = 30.0  # a trial without heartbeat for this long is interrupted, and re-run

    def fingerprint(self) -> dict[str, Any]:
        """What makes two sweeps the same experiment (not how its workers beat)."""
        return {k: v for k, v in asdict(self).items() if k not in ("heartbeat_s", "stale_after_s")}

    def is_search(self) -> bool:
        if self.kind in SEARCH_KINDS:
            return True
        if self.kind == "lr_grid":
            return False
        raise TuneError(f"sweep.kind={self.kind!r}: choose lr_grid (an LR grid) or search (the LR with other "
                        "hyperparameters, by TPE)")

    def check_space(self) -> None:
        """The search space names known hyperparameters with positive, ordered bounds."""
        if not self.space:
            raise TuneError("sweep.kind=search needs sweep.space, e.g. {lr: [1e-4, 1e-1], output: [0.25, 4]}")
        for name, bounds in self.space.items():
            if name not in SEARCHABLE:
                raise TuneError(f"sweep.space.{name}: not a hyperparameter the search can set; choose from "
                                f"{sorted(SEARCHABLE)}")
            if len(bounds) != 2 or not all(isinstance(b, (int, float)) and math.isfinite(b) and b > 0 for b in bounds) \
                    or bounds[0] > bounds[1]:
                raise TuneError(f"sweep.space.{name}={list(bounds)}: give [low, high] with 0 < low <= high "
                                "(every range is searched log-uniformly)")
        if self.n_trials < 1:
            raise TuneError(f"sweep.n_trials={self.n_trials}: the search needs a budget of at least 1 trial")

    def grid(self) -> list[float]:
        if self.log2_lr_step <= 0 or self.log2_lr_max < self.log2_lr_min:
            raise TuneError(f"empty LR grid: log2_lr from {self.log2_lr_min} to {self.log2_lr_max} step "
                            f"{self.log2_lr_step}")
        count = int(round((self.log2_lr_max - self.log2_lr_min) / self.log2_lr_step)) + 1
        return [round(self.log2_lr_min + i * self.log2_lr_step, 6) for i in range(count)]


SEARCH_KINDS = ("search", "random")
# what a search may set: HParams fields, and the multipliers parametrize takes
MULTIPLIERS = ("output", "input", "attn", "branch")
SEARCHABLE = ("lr", "warmup_frac", "init", "grad_clip", *MULTIPLIERS)


@dataclass
class Optimum:
    """Best log2 LR of one proxy size: interpolated, the grid point, and whether it sits on the grid's edge."""

    size: int
    log2_lr: float
    grid_log2_lr: float
    loss: float
    at_edge: bool
    params: dict[str, Any] = field(default_factory=dict)
    points: list[tuple[float, float]] = field(default_factory=list)  # a grid's (log2 LR, loss), NaN: diverged

    @property
    def lr(self) -> float:
        return 2.0**self.log2_lr


def interpolated_optimum(log2_lrs: list[float], losses: list[float]) -> tuple[float, float, bool]:
    """(interpolated log2 LR, grid log2 LR, at_edge) from a sweep; non-finite losses are ignored."""
    points = sorted((x, y) for x, y in zip(log2_lrs, losses) if math.isfinite(y))
    if not points:
        raise TuneError("no trial finished with a finite loss: lower the LR grid (sweep.log2_lr_max)")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    best = int(np.argmin(ys))
    if best == 0 or best == len(xs) - 1:
        return xs[best], xs[best], True
    x3, y3 = np.array(xs[best - 1:best + 2]), np.array(ys[best - 1:best + 2])
    a, b, _ = np.polyfit(x3, y3, 2)
    vertex = float(-b / (2 * a)) if a > 0 else xs[best]
    return float(np.clip(vertex, x3[0], x3[-1])), xs[best], False


def _quiet_optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(name: str, storage: Any, fingerprint: dict[str, Any], sampler: Any) -> Any:
    """Create or load a study; refuse one that another experiment created."""
    optuna = _quiet_optuna()
    study = retry_races(lambda: optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                               direction="minimize", sampler=sampler))
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif stored != fingerprint:
        differ = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
        raise TuneError(f"study {name!r} in {_where(storage)} was made by another experiment ({', '.join(differ)} "
                        "differ); use a new run dir (hydra.run.dir=...) or sweep.storage/sweep.study, nothing was "
                        "changed")
    return study


def _where(storage: Any) -> str:
    return str(getattr(storage, "url", storage))


Objective = Callable[[int, HParams], TrainResult]


def run_sweep(objective: Objective, sizes: list[int], base_hp: HParams, sweep: SweepSettings, storage: str,
              fingerprint: dict[str, Any], progress: Callable[[str], None] | None = None) -> list[Optimum]:
    """Run (or finish) the sweep for every proxy size; returns each size's optimum."""
    optuna = _quiet_optuna()
    optima = []
    ledger = open_storage(storage, sweep.heartbeat_s, sweep.stale_after_s)
    for size in sizes:
        name = f"{sweep.study}-{size}"
        if sweep.is_search():
            sweep.check_space()
        # unused by the grid (every grid trial has fixed params); the search sets a fresh one per trial
        sampler = optuna.samplers.RandomSampler(seed=sweep.seed)
        study = open_study(name, ledger, dict(fingerprint, size=size, sweep=sweep.fingerprint()), sampler)

        def trial_fn(trial: Any, size: int = size) -> float:
            hp = _suggest(trial, base_hp, sweep)
            trial.set_user_attr("assignment", assignment(hp))
            result = objective(size, hp)
            for key in ("val_loss", "train_loss", "seconds", "tokens"):
                trial.set_user_attr(key, getattr(result, key))
            trial.set_user_attr("lr", hp.lr)
            if result.diverged:
                trial.set_user_attr("fail_reason", f"diverged: {result.reason}")
                if progress:
                    progress(f"size {size}: {_describe(hp, sweep)} diverged ({result.reason})")
                return float("nan")  # recorded as FAIL, the sweep goes on
            if progress:
                progress(f"size {size}: {_describe(hp, sweep)} -> val loss {result.val_loss:.4f}")
            return result.val_loss

        if sweep.is_search():
            search(study, ledger, storage, sweep.n_trials, trial_fn, lambda seed: tpe_sampler(sweep, seed))
        else:
            work_grid(study, ledger, storage, sweep.grid(), trial_fn, sweep.heartbeat_s)
        optima.append(_optimum(study, size, sweep))
    return optima


def tpe_sampler(sweep: SweepSettings, offset: int) -> Any:
    """Multivariate TPE seeded with ``sweep.seed + offset`` (random for its first trials, then modelling them)."""
    optuna = _quiet_optuna()
    startup = sweep.startup_trials or min(10, max(3, sweep.n_trials // 3))
    with warnings.catch_warnings():  # multivariate TPE is "experimental" in Optuna since 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=sweep.seed + offset, n_startup_trials=startup, multivariate=True)


def assignment(hp: HParams) -> dict[str, Any]:
    """The full set of hyperparameters a trial trained with (recorded in the ledger with each trial)."""
    return {"lr": hp.lr, "warmup_frac": hp.warmup_frac, "init": hp.init, "grad_clip": hp.grad_clip,
            "multipliers": dict(hp.multipliers)}


def _describe(hp: HParams, sweep: SweepSettings) -> str:
    text = f"lr 2^{math.log2(hp.lr):.2f}"
    if sweep.is_search():
        chosen = assignment(hp) | hp.multipliers
        text += "".join(f", {k} {chosen[k]:.3g}" for k in sweep.space if k != "lr" and chosen.get(k) is not None)
    return text


def requeue_interrupted(study: Any) -> list[int]:
    """Enqueue again, with the same assignment, every interrupted trial not yet re-run; call under the ledger
    lock. Returns the numbers of the trials re-queued."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    again = [t for t in trials if is_interrupted(t) and t.number not in retried and t.params]
    for trial in again:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    return [t.number for t in again]


def _is_result(trial: Any) -> bool:
    """A finished or diverged trial: a result that spends the budget (an interrupted one does not)."""
    return trial.state.name == "COMPLETE" or (trial.state.name == "FAIL" and not is_interrupted(trial))


def spent(study: Any) -> int:
    """Trials that count against the budget: results, and those running or queued."""
    return sum(1 for t in study.get_trials(deepcopy=False) if _is_result(t) or t.state.name in ("RUNNING", "WAITING"))


def search(study: Any, storage: Any, url: str, budget: int, run: Callable[[Any], float],
           sampler: Callable[[int], Any]) -> None:
    """Spend the study's trial budget (see the module docstring); resumable and shareable.

    Each new trial gets a fresh sampler, ``sampler(offset)``, seeded by the number of results in the ledger (and
    the trials other workers are running): what a trial proposes depends on the ledger alone, so a run killed
    and resumed proposes exactly what the uninterrupted run would have, and two workers do not propose alike.
    """
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    fail_dead_local_workers(study)
    with ledger_lock(storage, url, study.study_name):
        requeue_interrupted(study)

    def run_as_worker(trial: Any) -> float:
        trial.set_user_attr("worker", worker_id())  # so that a resume on this host sees at once that it died
        return run(trial)

    waiting = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING")
    remaining = budget - spent(study) + waiting
    try:
        for _ in range(max(0, remaining)):
            trials = study.get_trials(deepcopy=False)
            results = sum(map(_is_result, trials))
            if results >= budget:
                break
            running = sum(1 for t in trials if t.state.name == "RUNNING")
            study.sampler = sampler(results + 7919 * running)
            study.optimize(run_as_worker, n_trials=1)
    except BaseException:  # Optuna leaves a trial RUNNING on a BaseException other than KeyboardInterrupt
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get("worker") == worker_id():
                study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
        raise


def _suggest(trial: Any, base: HParams, sweep: SweepSettings) -> HParams:
    if not sweep.is_search():
        log2_lr = trial.suggest_float("log2_lr", min(sweep.grid()), max(sweep.grid()))
        return HParams(lr=2.0**log2_lr, warmup_frac=base.warmup_frac, init=base.init, grad_clip=base.grad_clip,
                       multipliers=dict(base.multipliers))
    values = {name: trial.suggest_float(name, low, high, log=True) for name, (low, high) in sweep.space.items()}
    return with_values(base, values)


def with_values(base: HParams, values: dict[str, float]) -> HParams:
    """``base`` with the searched values put in their places (multipliers into ``multipliers``)."""
    multipliers = dict(base.multipliers)
    multipliers.update({k: values[k] for k in MULTIPLIERS if k in values})
    return HParams(lr=values.get("lr", base.lr), warmup_frac=values.get("warmup_frac", base.warmup_frac),
                   init=values.get("init", base.init), grad_clip=values.get("grad_clip", base.grad_clip),
                   multipliers=multipliers)


def _optimum(study: Any, size: int, sweep: SweepSettings) -> Optimum:
    optuna = _quiet_optuna()
    trials = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
              and "lr" in t.user_attrs]
    if not sweep.is_search():
        xs = [math.log2(t.user_attrs["lr"]) for t in trials]
        ys = [t.value if t.state == optuna.trial.TrialState.COMPLETE else float("nan") for t in trials]
        log2_lr, grid_point, edge = interpolated_optimum(xs, ys)
        loss = min(y for y in ys if math.isfinite(y))
        return Optimum(size, log2_lr, grid_point, loss, edge, points=sorted(zip(xs, ys)))
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise TuneError(f"no trial of size {size} finished: narrow sweep.space or lower its LR range")
    best = min(done, key=lambda t: t.value)
    log2_lr = math.log2(best.user_attrs["lr"])
    return Optimum(size, log2_lr, log2_lr, best.value, False, dict(best.params))


def trial_rows(storage: str, sweep: SweepSettings, sizes: list[int]) -> list[dict[str, Any]]:
    """Every trial of the sweep, one row each (for trials.csv and the LR-vs-loss plot)."""
    optuna = _quiet_optuna()
    rows = []
    for size in sizes:
        study = optuna.load_study(study_name=f"{sweep.study}-{size}", storage=open_storage(storage))
        for t in study.trials:
            lr = t.user_attrs.get("lr")
            rows.append({"size": size, "trial": t.number, "state": t.state.name,
                         "log2_lr": math.log2(lr) if lr else None, "lr": lr,
                         "val_loss": t.user_attrs.get("val_loss"), "train_loss": t.user_attrs.get("train_loss"),
                         "seconds": t.user_attrs.get("seconds"),
                         "fail_reason": t.user_attrs.get("fail_reason", INTERRUPTED if is_interrupted(t) else ""),
                         "retry_of": t.user_attrs.get("retry_of", ""),
                         **{f"param_{k}": v for k, v in t.params.items()}})
    return rows


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def optimum_shift(optima: list[Optimum]) -> float:
    """How far the optimum moved between proxy sizes, in octaves (max - min of the optimal log2 LR)."""
    values = [o.log2_lr for o in optima]
    return max(values) - min(values) if values else 0.0


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)
    return path
