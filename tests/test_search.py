"""The multi-hyperparameter proxy search (hptransfer.pipeline.tune, kind "search"): every trial's full assignment
in the ledger, a killed trial re-run with the same assignment, only results spending the budget, the space
checked at the door, the chosen values reaching the target's HParams, and the tunable clip threshold."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from hptransfer.pipeline import tune
from hptransfer.pipeline.train import HParams, TrainResult
from hptransfer.pipeline.tune import SweepSettings, TuneError, run_sweep, with_values

SPACE = {"lr": [2.0**-12, 2.0**-2], "output": [0.125, 8.0], "warmup_frac": [0.01, 0.3]}
BEST = {"log2_lr": -6.0, "log2_output": 1.0}  # the synthetic bowl's minimum


def bowl(hp: HParams) -> float:
    """A loss with a known minimum at lr 2^-6, output 2 (warmup does not matter)."""
    return 1.0 + (math.log2(hp.lr) - BEST["log2_lr"]) ** 2 / 8 + (math.log2(hp.multipliers["output"])
                                                                     - BEST["log2_output"]) ** 2 / 8


def result(loss: float, diverged: bool = False) -> TrainResult:
    return TrainResult(val_loss=loss, train_loss=loss, steps=1, diverged=diverged, reason="test" if diverged else "",
                       curve=[], seconds=0.0, tokens=1)


def settings(trials: int, **kwargs) -> SweepSettings:
    return SweepSettings(kind="search", n_trials=trials, space=dict(SPACE), study="s", heartbeat_s=1,
                         stale_after_s=3, **kwargs)


def trials(url: str, size: int = 32) -> list:
    return optuna.load_study(study_name=f"s-{size}", storage=url).get_trials()


class Interrupt(BaseException):
    """Stands for Ctrl-C / SIGTERM inside a trial (not an Exception, like KeyboardInterrupt)."""


def test_every_trial_records_the_full_assignment_it_trained_with(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    seen: list[HParams] = []

    def objective(size: int, hp: HParams) -> TrainResult:
        seen.append(hp)
        return result(bowl(hp))

    base = HParams(lr=1.0, warmup_frac=0.05, init=0.02, grad_clip=0.5, multipliers={"attn": 0.5})
    run_sweep(objective, [32], base, settings(6), url, {"t": 1})
    done = [t for t in trials(url) if t.state.name == "COMPLETE"]
    assert len(done) == len(seen) == 6
    for trial, hp in zip(done, seen):
        recorded = trial.user_attrs["assignment"]
        assert recorded == tune.assignment(hp)
        assert recorded["lr"] == pytest.approx(trial.params["lr"])
        assert recorded["multipliers"] == {"attn": 0.5, "output": pytest.approx(trial.params["output"])}
        assert recorded["warmup_frac"] == pytest.approx(trial.params["warmup_frac"])
        assert (recorded["init"], recorded["grad_clip"]) == (0.02, 0.5)  # not searched: the base's values


def _interrupt_then_resume(tmp_path: Path, budget: int, stop_at: int) -> tuple[HParams, list[HParams], str]:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first: list[HParams] = []

    def dies(size: int, hp: HParams) -> TrainResult:
        first.append(hp)
        if len(first) == stop_at:
            raise Interrupt
        return result(bowl(hp))

    with pytest.raises(Interrupt):
        run_sweep(dies, [32], HParams(), settings(budget), url, {"t": 1})
    second: list[HParams] = []
    run_sweep(lambda size, hp: second.append(hp) or result(bowl(hp)), [32], HParams(), settings(budget), url, {"t": 1})
    return first[-1], second, url


def test_a_trial_killed_mid_run_is_run_again_with_its_assignment(tmp_path):
    killed, second, url = _interrupt_then_resume(tmp_path, budget=9, stop_at=5)
    assert tune.assignment(second[0]) == tune.assignment(killed)  # re-run first, with the same values
    states = [t.state.name for t in trials(url)]
    assert states.count("COMPLETE") == 9 and states.count("FAIL") == 1  # the budget is 9 results; nothing extra
    retry = [t for t in trials(url) if t.user_attrs.get("retry_of") is not None]
    assert len(retry) == 1 and retry[0].user_attrs["retry_of"] == 4 and retry[0].params == trials(url)[4].params


def _another_worker_s_result(url: str) -> None:
    """A result that lands in the ledger between the kill and the resume, as another worker's would."""
    study = optuna.load_study(study_name="s-32", storage=url)
    trial = study.ask({name: optuna.distributions.FloatDistribution(low, high, log=True)
                       for name, (low, high) in SPACE.items()})
    study.tell(trial, 3.0)


@pytest.mark.parametrize("requeue", [True, False])
def test_the_killed_assignment_survives_other_workers_results_only_by_the_requeue(tmp_path, monkeypatch, requeue):
    """A resume re-proposes the killed values by itself when the ledger is as it was (see the next test); once
    another worker's result has changed it, only the re-queue brings them back (the negative control: off)."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first: list[HParams] = []

    def dies(size: int, hp: HParams) -> TrainResult:
        first.append(hp)
        if len(first) == 5:
            raise Interrupt
        return result(bowl(hp))

    with pytest.raises(Interrupt):
        run_sweep(dies, [32], HParams(), settings(9), url, {"t": 1})
    _another_worker_s_result(url)
    if not requeue:
        monkeypatch.setattr(tune, "requeue_interrupted", lambda study: [])
    second: list[HParams] = []
    run_sweep(lambda size, hp: second.append(hp) or result(bowl(hp)), [32], HParams(), settings(9), url, {"t": 1})
    ran_again = any(tune.assignment(hp) == tune.assignment(first[-1]) for hp in second)
    assert ran_again is requeue


def test_a_resumed_search_proposes_what_the_uninterrupted_one_did(tmp_path):
    """The sampler is seeded from the ledger per trial: killed after 5 of 9 trials and resumed, the search trains
    the same 9 assignments, in the same order, as a run that was never killed."""
    straight: list[HParams] = []
    run_sweep(lambda size, hp: straight.append(hp) or result(bowl(hp)), [32], HParams(), settings(9),
              f"sqlite:///{tmp_path / 'straight.db'}", {"t": 1})
    killed, second, url = _interrupt_then_resume(tmp_path, budget=9, stop_at=5)
    done = [t.user_attrs["assignment"] for t in trials(url) if t.state.name == "COMPLETE"]
    assert done == [tune.assignment(hp) for hp in straight]
    assert len({json_key(a) for a in done}) == 9  # and no assignment twice


def json_key(assignment: dict) -> str:
    import json

    return json.dumps(assignment, sort_keys=True)


def test_a_sigkilled_worker_s_trial_is_re_run_by_the_next_command(tmp_path):
    """A real SIGKILL mid-trial (the trial stays RUNNING in the ledger): the same command finishes the budget and
    re-runs the killed assignment."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import math, time, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_search import bowl, result, settings
        from hptransfer.pipeline.train import HParams
        from hptransfer.pipeline.tune import run_sweep
        calls = []
        def objective(size, hp):
            calls.append(hp)
            if len(calls) == 3:
                time.sleep(120)
            return result(bowl(hp))
        run_sweep(objective, [32], HParams(), settings(5), {url!r}, {{"t": 1}})
    """))
    proc = subprocess.Popen([sys.executable, str(worker)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                running = [t for t in trials(url) if t.state.name == "RUNNING" and t.number == 2]
            except KeyError:
                running = []
            if running:
                break
            assert proc.poll() is None, "the worker died by itself"
            time.sleep(0.1)
        assert running, "the worker never reached its third trial"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = running[0].params
    again: list[HParams] = []
    run_sweep(lambda size, hp: again.append(hp) or result(bowl(hp)), [32], HParams(), settings(5), url, {"t": 1})
    assert again[0].lr == pytest.approx(killed["lr"]) and again[0].multipliers["output"] == pytest.approx(killed["output"])
    states = [t.state.name for t in trials(url)]
    assert states.count("COMPLETE") == 5 and states.count("RUNNING") == 0
    assert [t.user_attrs.get("retry_of") for t in trials(url)].count(2) == 1


def test_diverged_trials_spend_the_budget_interrupted_ones_do_not(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    calls = []

    def objective(size: int, hp: HParams) -> TrainResult:
        calls.append(hp)
        return result(float("nan"), diverged=True) if len(calls) % 2 else result(bowl(hp))

    run_sweep(objective, [32], HParams(), settings(6), url, {"t": 1})
    assert len(calls) == 6  # 3 diverged + 3 finished: the budget is spent, never re-run
    assert sum(t.state.name == "FAIL" and "fail_reason" in t.user_attrs for t in trials(url)) == 3
    run_sweep(objective, [32], HParams(), settings(6), url, {"t": 1})
    assert len(calls) == 6  # a finished search run again does nothing


def test_the_search_finds_the_bowl_s_minimum(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    optimum = run_sweep(lambda size, hp: result(bowl(hp)), [32], HParams(), settings(40), url, {"t": 1})[0]
    assert abs(optimum.log2_lr - BEST["log2_lr"]) < 1.0
    assert abs(math.log2(optimum.params["output"]) - BEST["log2_output"]) < 1.0
    assert optimum.loss < 1.25


@pytest.mark.parametrize("space, words", [
    ({"lr": [1e-4, 1e-1], "momentum": [0.5, 0.9]}, "sweep.space.momentum: not a hyperparameter"),
    ({"lr": [1e-1, 1e-4]}, "sweep.space.lr=[0.1, 0.0001]: give [low, high] with 0 < low <= high"),
    ({"output": [0.0, 4.0]}, "0 < low"),
    ({"lr": [1e-4]}, "give [low, high]"),
    ({}, "sweep.kind=search needs sweep.space"),
])
def test_a_bad_space_is_refused_before_any_trial(tmp_path, space, words):
    ran = []
    sweep = SweepSettings(kind="search", n_trials=3, space=space, study="s")
    with pytest.raises(TuneError, match=words.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        run_sweep(lambda size, hp: ran.append(hp) or result(1.0), [32], HParams(), sweep,
                  f"sqlite:///{tmp_path / 'l.db'}", {"t": 1})
    assert not ran


def test_zero_budget_and_unknown_kind_are_refused(tmp_path):
    with pytest.raises(TuneError, match="sweep.n_trials=0"):
        SweepSettings(kind="search", n_trials=0, space={"lr": [1e-3, 1e-2]}).check_space()
    with pytest.raises(TuneError, match="sweep.kind='grid'"):
        SweepSettings(kind="grid").is_search()


def test_searched_values_go_to_their_places():
    base = HParams(lr=1e-3, warmup_frac=0.05, init="rescale", grad_clip=None, multipliers={"attn": 2.0})
    hp = with_values(base, {"lr": 0.01, "output": 0.5, "grad_clip": 0.25, "warmup_frac": 0.1, "init": 0.02})
    assert (hp.lr, hp.warmup_frac, hp.init, hp.grad_clip) == (0.01, 0.1, 0.02, 0.25)
    assert hp.multipliers == {"attn": 2.0, "output": 0.5}
    assert base.multipliers == {"attn": 2.0} and base.grad_clip is None  # the base is not changed
