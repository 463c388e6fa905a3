"""Kill sweep workers mid-trial and resume: does the ledger lose or repeat trials, and is the chosen LR the same?

Two `recipes/tune.py` workers share one ledger (SQLite file or PostgreSQL server). The harness waits until a
worker is running a trial, SIGKILLs it at a random point of that trial, and starts a fresh worker in its place,
``--kills`` times; then it lets the workers finish. It counts, per backend: the kills (each mid-trial), the
interrupted trials the ledger marked (FAIL without a result), the grid points lost (no result) and duplicated
(more than one result), the interrupted points re-run, and whether the chosen LR equals that of an
uninterrupted single-worker sweep of the same grid.

    python bench/ledger_kills.py                 # SQLite and PostgreSQL, 10 kills each (about 3 min)
    python bench/ledger_kills.py --backends sqlite --kills 3
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402
from postgres import postgres_server  # noqa: E402

STUDY = "hptransfer-32"  # study "hptransfer", proxy size 32
GRID = (-13.0, -2.0, 1.0)  # log2 LR: 12 points


def tune_args(storage: str, run_dir: Path, steps: int) -> list[str]:
    low, high, step = GRID
    return ["experiment=smoke", "proxy.sizes=[32]", f"train.steps={steps}", f"sweep.log2_lr_min={low}",
            f"sweep.log2_lr_max={high}", f"sweep.log2_lr_step={step}", f"sweep.storage='{storage}'",
            "sweep.heartbeat_s=1", "sweep.stale_after_s=3", f"hydra.run.dir={run_dir}"]


def start_worker(storage: str, run_dir: Path, steps: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    handle = log.open("a")
    return subprocess.Popen([sys.executable, str(ROOT / "recipes" / "tune.py"), *tune_args(storage, run_dir, steps)],
                            cwd=run_dir.parent, env=env, stdout=handle, stderr=subprocess.STDOUT)


@functools.lru_cache(maxsize=None)
def _storage(url: str) -> Any:
    """One storage (one connection pool) per ledger for the harness's polling, not one per poll."""
    from hptransfer.pipeline.ledger import open_storage

    return open_storage(url)


def _trials(storage: str) -> list[Any]:
    import optuna

    try:
        return optuna.load_study(study_name=STUDY, storage=_storage(storage)).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def uninterrupted(storage: str, workdir: Path, steps: int) -> float:
    """The chosen log2 LR of one worker sweeping the grid without interruption."""
    run_dir = workdir / "uninterrupted"
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = start_worker(storage, run_dir, steps, workdir / "uninterrupted.log")
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"the uninterrupted sweep failed: {(workdir / 'uninterrupted.log').read_text()[-3000:]}")
    return json.loads((run_dir / "tune.json").read_text())["chosen"]["log2_lr"]


def kill_and_resume(storage: str, workdir: Path, kills: int, steps: int, workers: int = 2,
                    seed: int = 0, trial_s: float = 1.0) -> dict[str, Any]:
    """Run ``workers`` workers on ``storage``, SIGKILL one mid-trial ``kills`` times, let them finish; count."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    procs: dict[int, subprocess.Popen] = {}
    for i in range(workers):
        (workdir / f"w{i}").mkdir(exist_ok=True)
        procs[i] = start_worker(storage, workdir / f"w{i}", steps, workdir / f"w{i}.log")
    killed: list[int] = []  # trial numbers running in the killed worker
    deadline = time.time() + 600
    while len(killed) < kills and time.time() < deadline:
        if all(p.poll() is not None for p in procs.values()):
            break  # the sweep finished before all kills were done
        by_pid = {p.pid: i for i, p in procs.items() if p.poll() is None}
        running = [t for t in _trials(storage) if t.state.name == "RUNNING"
                   and int(str(t.user_attrs.get("worker", ":0")).rpartition(":")[2]) in by_pid]
        if not running:
            time.sleep(0.05)
            continue
        victim = rng.choice(running)
        time.sleep(rng.uniform(0.1, 0.8) * trial_s)
        i = by_pid[int(victim.user_attrs["worker"].rpartition(":")[2])]
        now = {t.number: t.state.name for t in _trials(storage)}
        if now.get(victim.number) != "RUNNING" or procs[i].poll() is not None:
            continue  # it finished first: not a mid-trial kill
        procs[i].send_signal(signal.SIGKILL)
        procs[i].wait()
        killed.append(victim.number)
        procs[i] = start_worker(storage, workdir / f"w{i}", steps, workdir / f"w{i}.log")
    codes = [p.wait(timeout=max(1, deadline - time.time())) for p in procs.values()]
    trials = _trials(storage)
    low, high, step = GRID
    grid = [round(low + k * step, 6) for k in range(int(round((high - low) / step)) + 1)]
    point = lambda t: round(float(t.params.get("log2_lr", "nan")), 6)  # noqa: E731
    results = Counter(point(t) for t in trials if t.state.name == "COMPLETE" or
                      (t.state.name == "FAIL" and "fail_reason" in t.user_attrs))
    interrupted = [t for t in trials if t.state.name == "FAIL" and "fail_reason" not in t.user_attrs]
    by_number = {t.number: t for t in trials}
    chosen = [json.loads((workdir / f"w{i}" / "tune.json").read_text())["chosen"]["log2_lr"]
              for i in procs if (workdir / f"w{i}" / "tune.json").exists()]
    return {
        "kills": len(killed), "worker_exit_codes": codes, "trials": len(trials), "grid_points": len(grid),
        "marked_interrupted": sum(by_number[n].state.name == "FAIL" and n in {t.number for t in interrupted}
                                  for n in killed),
        "lost": sum(results[p] == 0 for p in grid), "duplicated": sum(results[p] > 1 for p in grid),
        "rerun": sum(results[point(by_number[n])] == 1 for n in killed),
        "off_grid": sum(p not in grid for p in results), "chosen_log2_lr": chosen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300, help="training steps per trial (about 1 s at 300)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hpt-ledger-kills"))
    args = parser.parse_args()
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)
    reference = uninterrupted(f"sqlite:///{args.workdir / 'reference.db'}", args.workdir, args.steps)
    rows = []
    for backend in args.backends:
        started = time.perf_counter()
        if backend == "sqlite":
            figures = kill_and_resume(f"sqlite:///{args.workdir / 'shared.db'}", args.workdir / backend, args.kills,
                                      args.steps)
        else:
            with postgres_server() as url:
                figures = kill_and_resume(url, args.workdir / backend, args.kills, args.steps)
        figures["seconds"] = round(time.perf_counter() - started, 1)
        figures["same_lr_as_uninterrupted"] = all(abs(c - reference) < 1e-9 for c in figures["chosen_log2_lr"])
        rows.append((backend, figures))
        print(backend, json.dumps(figures), flush=True)
    import torch

    path = write_result("ledger_kills", torch.device("cpu"), {"kills": args.kills, "steps": args.steps, "grid": GRID,
                                                             "uninterrupted_log2_lr": reference, "backends": dict(rows)})
    print(f"\nuninterrupted single worker: chosen log2 lr {reference:.4f}; wrote {path}\n")
    print("| backend | kills (mid-trial) | marked interrupted | lost | duplicated | re-run | same LR | workers exit | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, f in rows:
        print(f"| {backend} | {f['kills']} | {f['marked_interrupted']} | {f['lost']} | {f['duplicated']} | {f['rerun']} | "
              f"{'yes' if f['same_lr_as_uninterrupted'] else 'NO'} | {f['worker_exit_codes']} | {f['seconds']} |")


if __name__ == "__main__":
    main()
