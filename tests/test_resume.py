"""The README's main job killed at three points and run again unchanged: it resumes the unfinished run (no
finished trial redone, the target from its checkpoint) and ends exactly like a run that was never killed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the README's command on a smaller setting: the default search (4 trials), the coordinate check, 40 target steps
ARGS = ["experiment=smoke", "sweep=search", "sweep.n_trials=4", "proxy.sizes=[32]"]
KILLS = ["trial:3", "target_step:30", "report"]  # mid-sweep (a trial RUNNING), mid-target, during the report


def main_job(cwd: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("HPT_KILL_AT", None)
    if kill_at:
        env["HPT_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, str(ROOT / "recipes" / "mutransfer.py"), *ARGS, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def run_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "mutransfer" / "smoke").iterdir())


def completed(directory: Path) -> list[dict]:
    return [row for row in csv.DictReader((directory / "trials.csv").open()) if row["state"] == "COMPLETE"]


@pytest.mark.slow
def test_killed_three_times_the_same_command_ends_like_an_uninterrupted_run(tmp_path):
    straight_cwd, killed_cwd = tmp_path / "straight", tmp_path / "killed"
    straight_cwd.mkdir()
    killed_cwd.mkdir()
    first = main_job(straight_cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    [straight] = run_dirs(straight_cwd)
    assert f"run dir: {straight}" in first.stdout.splitlines()[0]  # said at start, before any stage

    for number, point in enumerate(KILLS):
        proc = main_job(killed_cwd, kill_at=point)
        assert proc.returncode == -9, f"{point}: {proc.stderr[-2000:]}"
        if number:
            assert "resuming the unfinished run in" in proc.stdout
    last = main_job(killed_cwd)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "resuming the unfinished run in" in last.stdout
    [resumed] = run_dirs(killed_cwd)  # one run dir: every rerun went on in the first one

    want, got = (json.loads((d / "transfer.json").read_text()) for d in (straight, resumed))
    assert got["lr"] == want["lr"] and got["multipliers"] == want["multipliers"]
    assert got["result"]["val_loss"] == want["result"]["val_loss"]  # bit-identical
    # no finished trial redone: 4 results, plus the one trial killed mid-run (re-run once, with its values)
    rows = list(csv.DictReader((resumed / "trials.csv").open()))
    assert [r["state"] for r in rows].count("COMPLETE") == 4 and len(rows) == 5
    assert [r["val_loss"] for r in completed(resumed)] == [r["val_loss"] for r in completed(straight)]
    # each step once in metrics.jsonl, the same rows as the uninterrupted run
    got_rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    want_rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got_rows] == list(range(1, 41)) and got_rows == want_rows
    # the target resumed from its step-20 checkpoint: its first steps were trained once, its last ones twice
    log = (resumed / "mutransfer.log").read_text()
    assert log.count("target step 4/40:") == 1 and log.count("target step 24/40:") == 2
    assert json.loads((resumed / "run_state.json").read_text())["status"] == "done"

    # the negative control: resume=false starts a second run dir instead of going on with the first
    fresh = main_job(killed_cwd, "resume=false", kill_at="trial:1")
    assert fresh.returncode == -9 and "resuming" not in fresh.stdout
    assert len(run_dirs(killed_cwd)) == 2
