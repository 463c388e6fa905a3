"""The trials ledger: an Optuna study that many workers share and that survives workers killed mid-trial.

A grid sweep is a fixed set of points, so the ledger's job is that each point ends with exactly one result,
however many workers run it and however often they die. How it holds, on a SQLite file or a PostgreSQL server:

- **Enqueue under a lock.** Every grid point with no live or finished trial is added as a WAITING trial with
  fixed params, while holding the ledger lock (SQLite: ``flock`` on a file next to the database; PostgreSQL:
  an advisory lock named after the study). Workers that start together cannot add a point twice.
- **Claim under the lock.** A worker moves one WAITING trial to RUNNING while holding the lock, so no two
  workers run the same trial.
- **Heartbeats.** A running trial writes a heartbeat every ``heartbeat_s``. A worker that dies (SIGKILL, a lost
  node, a preempted job) stops writing; after ``stale_after_s`` any live worker marks its trial FAIL
  (Optuna's stale-trial check) with no ``fail_reason`` - "interrupted" - and the next enqueue adds the point
  again, so it is re-run. A dead worker on the same host (its process id is gone) is seen at once.
- **Leave when done.** A worker leaves a study only when nothing is WAITING or RUNNING: it waits for the
  others' trials (which may turn stale and need it) instead of leaving a point behind.

A diverged trial is a result, not an interruption: it is FAIL with a ``fail_reason`` and is never re-run.
This module touches two private Optuna attributes (``Study._storage`` and the trials' ``_trial_id``), the
same ones Optuna's own ask/tell code uses.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

GRID_PARAM = "log2_lr"
INTERRUPTED = "interrupted: its worker stopped sending heartbeats (killed or lost); the point was re-run"


def open_storage(url: str, heartbeat_s: float | None = None, stale_after_s: float | None = None) -> Any:
    """An Optuna RDB storage; with ``heartbeat_s`` its running trials beat and go stale after ``stale_after_s``.

    SQLite waits up to 60 s for a lock instead of failing when workers write at once.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if heartbeat_s is None:
        return retry_races(lambda: optuna.storages.RDBStorage(url, engine_kwargs=kwargs))
    grace = int(math.ceil(stale_after_s if stale_after_s is not None else 6 * heartbeat_s))
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9; this is what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return retry_races(lambda: optuna.storages.RDBStorage(url, engine_kwargs=kwargs, grace_period=max(grace, 2),
                                                              heartbeat_interval=max(1, int(round(heartbeat_s)))))


def retry_races(make: Callable[[], Any], attempts: int = 8) -> Any:
    """Workers that start together race to create the ledger's schema and studies; the losers retry."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return make()
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@contextmanager
def ledger_lock(storage: Any, url: str, study_name: str) -> Iterator[None]:
    """Mutual exclusion between the workers of one study (see the module docstring)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(f"{parsed.database}.{study_name}.lock")
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif parsed.get_backend_name() == "postgresql":
        key = zlib.crc32(study_name.encode()) - 2**31  # a signed 32-bit key per study
        with storage.engine.connect() as connection:  # a dead worker's session ends, and its lock with it
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
    else:  # other databases: Optuna's row locks keep claims single; enqueues of workers starting together may race
        yield


def _point(trial: Any) -> float | None:
    value = trial.params.get(GRID_PARAM, trial.system_attrs.get("fixed_params", {}).get(GRID_PARAM))
    return None if value is None else round(float(value), 6)


def is_interrupted(trial: Any) -> bool:
    """A FAIL that is not a result: its worker died (no ``fail_reason``, no loss recorded)."""
    return trial.state.name == "FAIL" and "fail_reason" not in trial.user_attrs


def enqueue_missing(study: Any, points: list[float]) -> list[float]:
    """Add a WAITING trial for every grid point that has none WAITING, RUNNING, COMPLETE or diverged; call under
    the ledger lock. Returns the points added (interrupted ones come back here)."""
    covered = {_point(t) for t in study.get_trials(deepcopy=False)
               if t.state.name in ("WAITING", "RUNNING", "COMPLETE") or (t.state.name == "FAIL" and not is_interrupted(t))}
    added = [p for p in points if round(p, 6) not in covered]
    for point in added:
        study.enqueue_trial({GRID_PARAM: point}, skip_if_exists=False)
    return added


def fail_dead_local_workers(study: Any) -> int:
    """Mark interrupted, without waiting for ``stale_after_s``, the running trials of workers on this host whose
    process is gone (the common resume: the same command again after a kill). Returns how many."""
    import optuna

    host, failed = os.uname().nodename, 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        where, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if where != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            failed += bool(study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def worker_id() -> str:
    """``host:pid`` of this process, recorded with each trial it runs."""
    return f"{os.uname().nodename}:{os.getpid()}"


def claim(study: Any) -> Any | None:
    """Move one WAITING trial to RUNNING and return it as an Optuna Trial (None when none waits); call under
    the ledger lock."""
    import optuna

    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        if study._storage.set_trial_state_values(frozen._trial_id, state=optuna.trial.TrialState.RUNNING):
            trial = optuna.trial.Trial(study, frozen._trial_id)
            trial.set_user_attr("worker", worker_id())
            return trial
    return None


class Heartbeat:
    """A daemon thread that records a running trial's heartbeat until stopped."""

    def __init__(self, study: Any, trial: Any, interval_s: float) -> None:
        self.storage, self.trial_id, self.interval = study._storage, trial._trial_id, interval_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial.number}")

    def _beat(self) -> None:
        while not self.stop_event.is_set():
            self.storage.record_heartbeat(self.trial_id)
            self.stop_event.wait(self.interval)

    def __enter__(self) -> "Heartbeat":
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join()


def work_grid(study: Any, storage: Any, url: str, points: list[float], run: Callable[[Any], float],
              heartbeat_s: float, poll_s: float = 1.0) -> None:
    """Run grid trials of ``study`` until every point has its result (see the module docstring).

    ``run(trial)`` returns the loss, or NaN for a diverged trial (recorded as FAIL; it must set the trial's
    ``fail_reason``). An exception in ``run`` marks the trial interrupted (FAIL, its message in the user attr
    ``error``), so that a resumed sweep runs it again, and is raised.
    """
    import optuna

    FAIL = optuna.trial.TrialState.FAIL
    while True:
        optuna.storages.fail_stale_trials(study)
        fail_dead_local_workers(study)
        with ledger_lock(storage, url, study.study_name):
            enqueue_missing(study, points)
            trial = claim(study)
        if trial is None:
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                return
            time.sleep(poll_s)  # others' trials are running: wait, they may go stale and need re-running
            continue
        with Heartbeat(study, trial, heartbeat_s):
            try:
                value = run(trial)
            except BaseException as error:  # Ctrl-C, SIGTERM, a bug, OOM: interrupted, so re-run on resume
                trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
                study.tell(trial, state=FAIL)
                raise
        if math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=FAIL)
