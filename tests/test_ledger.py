"""The trials ledger on real storage (a SQLite file, a PostgreSQL server started here): concurrent claims never
double-run a trial, and workers SIGKILLed mid-trial lose and repeat nothing and pick the same LR."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from ledger_kills import kill_and_resume, uninterrupted  # noqa: E402
from postgres import missing, postgres_server  # noqa: E402

from hptransfer.pipeline.ledger import claim, enqueue_missing, ledger_lock, open_storage  # noqa: E402


@pytest.fixture(scope="module")
def postgres_url():
    reason = missing()
    if reason:
        if os.environ.get("HPT_REQUIRE_POSTGRES"):
            pytest.fail(f"HPT_REQUIRE_POSTGRES is set but no PostgreSQL server can start: {reason}")
        pytest.skip(f"no PostgreSQL server here: {reason}")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


def test_concurrent_claims_never_run_a_trial_twice(storage_url, request):
    import optuna

    name = f"claims-{request.node.callspec.id}-{os.getpid()}"
    points = [float(p) for p in range(-40, 0)]
    claimed: list[list[int]] = [[] for _ in range(4)]

    def worker(i: int) -> None:  # each with its own storage and study objects, as separate processes would
        storage = open_storage(storage_url, heartbeat_s=1, stale_after_s=5)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
        while True:
            with ledger_lock(storage, storage_url, name):
                enqueue_missing(study, points)
                trial = claim(study)
            if trial is None:
                return
            trial.suggest_float("log2_lr", -40, 0)
            claimed[i].append(trial.number)
            study.tell(trial, 0.0)

    storage = open_storage(storage_url)
    optuna.create_study(study_name=name, storage=storage)  # made once, so the workers race only on trials
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = [n for c in claimed for n in c]
    assert len(numbers) == len(set(numbers)) == len(points)  # each trial once, every point once
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert sorted(t.params["log2_lr"] for t in trials) == points
    assert sum(bool(c) for c in claimed) >= 2  # the workers really shared the work


@pytest.fixture(scope="module")
def reference_lr(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    return uninterrupted(f"sqlite:///{workdir / 'reference.db'}", workdir, steps=300)


@pytest.mark.slow
def test_ten_sigkills_mid_trial_lose_and_repeat_nothing(storage_url, reference_lr, tmp_path):
    figures = kill_and_resume(storage_url, tmp_path / "kills", kills=10, steps=300)
    assert figures["kills"] == 10, figures  # every kill hit a running trial
    assert figures["worker_exit_codes"] == [0, 0], figures
    assert figures["marked_interrupted"] == 10 and figures["rerun"] == 10, figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["off_grid"] == 0, figures
    assert figures["chosen_log2_lr"] and all(c == pytest.approx(reference_lr, abs=1e-9)
                                             for c in figures["chosen_log2_lr"]), (figures, reference_lr)
