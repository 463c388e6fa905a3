"""recipes/tune.py, transfer.py, mutransfer.py: composition, the smoke pipeline, resumable sweeps, divergence,
torchrun DDP/FSDP2 on CPU, wandb offline, and bad input that changes nothing."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose


ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
TINY = ["experiment=smoke", "coord_check.enabled=false", "proxy.sizes=[32]", "train.steps=8"]


def recipe(name: str, args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WANDB_MODE": "disabled", **env}
    return subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=environment, cwd=cwd)


def shown(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr)[-3000:]



@pytest.mark.parametrize("primary", ["tune", "transfer", "mutransfer"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(hydra_conf, primary, experiment):
    cfg = compose(primary, overrides=[f"experiment={experiment}"])
    assert cfg.name == experiment and cfg.proxy.sizes
    size = cfg.model.width if cfg.proxy.axis == "width" else cfg.model.depth
    assert max(cfg.proxy.sizes) <= size


def test_smoke_pipeline_writes_report(tmp_path):
    out = tmp_path / "smoke"
    proc = recipe("mutransfer", ["experiment=smoke", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    transfer = json.loads((out / "transfer.json").read_text())
    assert transfer["lr"] > 0 and transfer["scheme"] == "completep" and "proxy width 64" in transfer["source"]
    report = (out / "report.md").read_text()
    assert "Proxy sweep" in report and "lr_sweep.png" in report and "Coordinate check" in report
    assert list(out.glob("*.png"))
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2 * 5 and {r["size"] for r in rows} == {"32", "64"}
    assert (out / "metrics.jsonl").read_text().count("\n") >= 40


def _count_complete(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_sweep_resumes_without_repeating(tmp_path):
    out = tmp_path / "tune"
    args = ["experiment=smoke", "proxy.sizes=[32]", "train.steps=30", "sweep.log2_lr_min=-12",
            "sweep.log2_lr_max=-2", "sweep.log2_lr_step=1", f"hydra.run.dir={out}"]
    command = [sys.executable, str(ROOT / "recipes" / "tune.py"), *args]
    proc = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "WANDB_MODE": "disabled"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _count_complete(out / "trials.db") < 3 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _count_complete(out / "trials.db")
    assert 3 <= done_before < 11, "the sweep was not interrupted mid-way"
    again = recipe("tune", args, tmp_path)
    assert again.returncode == 0, shown(again)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    complete = [float(r["log2_lr"]) for r in rows if r["state"] == "COMPLETE"]
    assert sorted(complete) == [float(x) for x in range(-12, -1)]  # every grid point exactly once
    assert len(rows) - len(complete) <= 1  # at most the one trial the kill interrupted


def test_diverged_trial_is_recorded_and_sweep_continues(tmp_path):
    out = tmp_path / "tune"
    proc = recipe("tune", [*TINY, "sweep.log2_lr_min=-8", "sweep.log2_lr_max=4", "sweep.log2_lr_step=4",
                           f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    rows = {float(r["log2_lr"]): r for r in csv.DictReader((out / "trials.csv").open())}
    assert rows[4.0]["state"] == "FAIL" and rows[4.0]["fail_reason"].startswith("diverged")
    assert rows[-8.0]["state"] == "COMPLETE" and rows[-4.0]["state"] == "COMPLETE"
    chosen = json.loads((out / "tune.json").read_text())["chosen"]
    assert chosen["log2_lr"] < 4


def test_ledger_from_another_experiment_is_refused(tmp_path):
    out = tmp_path / "tune"
    first = recipe("tune", [*TINY, f"hydra.run.dir={out}"], tmp_path)
    assert first.returncode == 0, shown(first)
    before = (out / "trials.csv").read_text()
    second = recipe("tune", [*TINY, "train.batch_size=4", f"hydra.run.dir={out}"], tmp_path)
    assert second.returncode != 0 and "made by another experiment" in shown(second)
    assert (out / "trials.csv").read_text() == before


@pytest.mark.parametrize("args,message", [
    (["model=transformer"], "Could not find 'model/transformer'"),
    (["scheme=mu_p"], "Could not find 'scheme/mu_p'"),
    (["data=imagenet"], "Could not find 'data/imagenet'"),
    (["data=synthetic"], "needs a token dataset"),
    (["model.base_width=1024"], "larger than the target"),
    (["data.path=/nonexistent/corpus.txt"], "does not exist"),
    (["proxy.sizes=[4096]"], "exceed the target"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    out = tmp_path / "run"
    proc = recipe("mutransfer", [*TINY, *args, f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode != 0
    assert message in shown(proc)
    assert not (out / "report.md").exists()


def test_token_file_with_wrong_dtype(tmp_path):
    """A uint16 file read as uint32 pairs ids into huge numbers: caught, with the dtype to use instead."""
    tokens = tmp_path / "train.bin"
    (np.arange(0, 6000) % 3000).astype(np.uint16).tofile(tokens)
    out = tmp_path / "run"
    proc = recipe("transfer", [*TINY, "data=tokens", f"data.path={tokens}", "data.dtype=uint32", "data.vocab_size=3000",
                               f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode != 0 and "data.dtype=uint16" in shown(proc)
    assert not (out / "transfer.json").exists()
    ok = recipe("transfer", [*TINY, "data=tokens", f"data.path={tokens}", "data.dtype=uint16", "data.vocab_size=3000",
                             "lr=0.003", f"hydra.run.dir={tmp_path / 'ok'}"], tmp_path)
    assert ok.returncode == 0, shown(ok)


def test_transfer_reads_the_tune_dir(tmp_path):
    tune_dir = tmp_path / "tune"
    assert recipe("tune", [*TINY, f"hydra.run.dir={tune_dir}"], tmp_path).returncode == 0
    chosen = json.loads((tune_dir / "tune.json").read_text())["chosen"]["lr"]
    out = tmp_path / "target"
    proc = recipe("transfer", [*TINY, f"tune_dir={tune_dir}", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    transfer = json.loads((out / "transfer.json").read_text())
    assert transfer["lr"] == pytest.approx(chosen) and "interpolated optimum" in transfer["source"]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_torchrun_two_cpu_processes(tmp_path, parallel):
    out = tmp_path / "target"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "recipes" / "transfer.py"), *TINY, "lr=0.003", f"train.parallel={parallel}",
               f"hydra.run.dir={out}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, shown(proc)
    transfer = json.loads((out / "transfer.json").read_text())
    assert np.isfinite(transfer["result"]["val_loss"])
    assert transfer["result"]["tokens"] == 2 * 8 * 8 * 32  # 2 ranks x steps x batch x seq
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))  # rank 0 only: one row per step
    assert "val_loss" in rows[-1]  # the final evaluation joins the last step's row


def _torchrun(args: list[str], cwd: Path, **popen: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "recipes" / "transfer.py"), *args]
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _process_tree(pid: int) -> list[int]:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in children for p in _process_tree(int(child))]


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp2_run_killed_and_resumed_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path):
    import torch

    args = [*TINY, "lr=0.003", "train.steps=60", "train.parallel=fsdp2", "train.checkpoint_every=20"]
    straight = _torchrun([*args, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]
    expected = json.loads((tmp_path / "straight" / "transfer.json").read_text())["result"]

    run = tmp_path / "killed"
    victim = _torchrun([*args, f"hydra.run.dir={run}"], tmp_path)
    deadline, step = time.time() + 300, 0
    while time.time() < deadline and victim.poll() is None:
        extras = run / "checkpoint" / "extras-0.pt"
        try:
            step = torch.load(extras, weights_only=True)["step"] if extras.exists() else 0
        except Exception:  # being swapped in
            step = 0
        if 0 < step < 60:
            for pid in _process_tree(victim.pid):  # torchrun and both ranks (in their own process groups)
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    victim.wait()
    time.sleep(1)
    assert 0 < step < 60 and not (run / "transfer.json").exists(), "the run was not killed mid-way"
    assert torch.load(run / "checkpoint" / "extras-0.pt", weights_only=True)["step"] == step  # nothing ran on
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp",
                                                                      "extras-0.pt", "extras-1.pt"]
    resumed = _torchrun([*args, "train.resume=true", f"hydra.run.dir={run}"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()[-3000:]
    result = json.loads((run / "transfer.json").read_text())["result"]
    assert result["train_losses"] == expected["train_losses"] and len(expected["train_losses"]) == 60
    assert result["val_loss"] == expected["val_loss"]  # bit for bit: weights, optimizer state, LR factors, data


@pytest.mark.slow
def test_wandb_offline_files(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    proc = recipe("mutransfer", [*TINY, "logger=wandb", f"hydra.run.dir={out}"], tmp_path, WANDB_MODE="offline",
                  WANDB_API_KEY="")
    assert proc.returncode == 0, shown(proc)
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # proxy and target (coord check disabled)


@pytest.mark.slow
def test_joblib_multirun_workers_share_one_ledger(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    proc = recipe("tune", ["-m", *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+worker=0,1",
                           f"sweep.storage={storage}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    with sqlite3.connect(tmp_path / "shared.db") as con:
        states = con.execute("select state, count(*) from trials group by state").fetchall()
    assert dict(states).get("COMPLETE", 0) >= 4  # the 4-point grid, finished by two workers


def _ledger(db: Path) -> list[tuple[float, str, float]]:
    with sqlite3.connect(db) as con:
        rows = con.execute("select p.param_value, t.state, v.value from trials t join trial_params p "
                           "on p.trial_id = t.trial_id left join trial_values v on v.trial_id = t.trial_id").fetchall()
    return sorted((round(x, 6), state, round(v, 9) if v is not None else None) for x, state, v in rows)


@pytest.mark.slow
def test_submitit_local_sweep_matches_the_basic_launcher(tmp_path):
    """The job a cluster user submits (hydra/launcher=slurm is submitit too) is the one tested here: two
    workers through submitit's local executor write the same ledger and pick the same LR as the basic launcher."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the dev extra has hydra-submitit-launcher")
    chosen = {}
    for launcher in ("basic", "submitit_local"):
        db = tmp_path / f"{launcher}.db"
        args = ["-m", *TINY, "train.steps=30", "sweep.log2_lr_min=-10", "sweep.log2_lr_max=-2", "+worker=0,1",
                f"hydra/launcher={launcher}", f"sweep.storage='sqlite:///{db}'",
                f"hydra.sweep.dir={tmp_path / launcher}"]
        if launcher == "submitit_local":
            args.append("hydra.launcher.timeout_min=10")
        proc = recipe("tune", args, tmp_path, OMP_NUM_THREADS="1")
        assert proc.returncode == 0, shown(proc)
        chosen[launcher] = [json.loads((tmp_path / launcher / str(i) / "tune.json").read_text())["chosen"]["log2_lr"]
                            for i in (0, 1)]
    assert list((tmp_path / "submitit_local" / ".submitit").iterdir())  # it really went through submitit
    assert _ledger(tmp_path / "basic.db") == _ledger(tmp_path / "submitit_local.db")
    assert len(_ledger(tmp_path / "basic.db")) == 5  # log2 lr -10..-2 in steps of 2 (smoke): each point once
    assert chosen["submitit_local"] == pytest.approx(chosen["basic"], abs=1e-12)


def test_slurm_launcher_config_composes(hydra_conf):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the dev extra has hydra-submitit-launcher")
    cfg = compose("tune", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.array_parallelism == 8 and launcher.timeout_min == 240


@pytest.mark.parametrize("optim", ["muon", "lion", "adafactor", "schedulefree_adamw"])
def test_pipeline_with_the_newer_optimizers(tmp_path, optim):
    out = tmp_path / "run"
    proc = recipe("mutransfer", [*TINY, f"optim={optim}", "sweep.log2_lr_min=-10", "sweep.log2_lr_max=-4",
                                 "sweep.log2_lr_step=3", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    transfer = json.loads((out / "transfer.json").read_text())
    assert np.isfinite(transfer["result"]["val_loss"]) and transfer["lr"] > 0


def test_your_own_model_by_import_path(tmp_path):
    """A plain-PyTorch model from the user's package, with its branch globs passed through the config."""
    out = tmp_path / "run"
    proc = recipe("mutransfer", [*TINY, "model.family=examples.my_model:build",
                                 "+model.parametrize.branches=[blocks.*.attn,blocks.*.mlp]",
                                 "+model.parametrize.base_head_dim=8", f"hydra.run.dir={out}"], tmp_path,
                  PYTHONPATH=str(ROOT))
    assert proc.returncode == 0, shown(proc)
    assert json.loads((out / "transfer.json").read_text())["target"]["family"] == "examples.my_model:build"
    bad = recipe("mutransfer", [*TINY, "model.family=examples.nope:build", f"hydra.run.dir={tmp_path / 'bad'}"],
                 tmp_path, PYTHONPATH=str(ROOT))
    assert bad.returncode != 0 and "could not import" in shown(bad)


def test_resnet_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    proc = recipe("mutransfer", ["experiment=width_resnet", "train.steps=10", "sweep.log2_lr_step=4",
                                 "coord_check.sizes=[16,32,64]", "coord_check.steps=2", "coord_check.seeds=1",
                                 f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    assert json.loads((out / "coord_check.json").read_text())["ok"] is True
    assert json.loads((out / "transfer.json").read_text())["target"]["family"] == "resnet"


def test_scaling_recipe_predicts_and_reports(tmp_path):
    out = tmp_path / "scaling"
    proc = recipe("scaling", ["experiment=smoke", "ladder.sizes=[16,24,32,48,64]", "model.width=96", "train.steps=10",
                              f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, shown(proc)
    summary = json.loads((out / "scaling.json").read_text())
    assert len(summary["ladder"]) == 5 and summary["prediction"]["target"] == 96
    assert summary["prediction"]["abs_rel_error"] is not None
    assert (out / "scaling_fit.png").exists() and "Scaling-law prediction" in (out / "report.md").read_text()


@pytest.mark.parametrize("kind", ["search", pytest.param("random", marks=pytest.mark.slow)])  # random: the old name
def test_search_over_lr_and_multipliers_reaches_the_target(tmp_path, kind):
    out = tmp_path / "run"
    proc = recipe("mutransfer", [*TINY, f"sweep={kind}", "sweep.n_trials=3", "++sweep.space.warmup_frac=[0.01,0.2]",
                                 "++sweep.space.grad_clip=[0.05,1.0]", "~sweep.space.input", f"hydra.run.dir={out}"],
                  tmp_path)
    assert proc.returncode == 0, shown(proc)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and all(r["param_output"] and r["param_warmup_frac"] and r["param_grad_clip"] for r in rows)
    assert "param_input" not in rows[0]
    chosen = json.loads((out / "tune.json").read_text())["chosen"]["params"]
    transfer = json.loads((out / "transfer.json").read_text())
    assert transfer["multipliers"]["output"] == pytest.approx(chosen["output"])
    assert transfer["warmup_frac"] == pytest.approx(chosen["warmup_frac"])
    assert transfer["grad_clip"] == pytest.approx(chosen["grad_clip"])
    report = (out / "report.md").read_text()
    assert "## Proxy search" in report and f"output = {chosen['output']:.4g}" in report


@pytest.mark.slow
def test_target_check_trains_the_target_beside_the_transferred_lr_and_says_which_won(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "target_check.enabled=true", "target_check.octaves=[-2,2]", f"hydra.run.dir={out}"]
    proc = recipe("mutransfer", args, tmp_path)
    assert proc.returncode == 0, shown(proc)
    points = json.loads((out / "target_check.json").read_text())["points"]
    transfer = json.loads((out / "transfer.json").read_text())
    assert [p["octave"] for p in points] == [-2.0, 0.0, 2.0]
    assert [p["lr"] for p in points] == pytest.approx([transfer["lr"] / 4, transfer["lr"], transfer["lr"] * 4])
    assert points[1]["val_loss"] == pytest.approx(transfer["result"]["val_loss"])
    best = min((p for p in points if p["val_loss"] is not None), key=lambda p: p["val_loss"])
    report = (out / "report.md").read_text()
    assert "A small direct sweep at the target" in report
    assert ("the transfer held" in report) == (best["octave"] == 0)
    assert ("x 2^" + f"{best['octave']:+g}: the transfer missed" in report) == (best["octave"] != 0)
