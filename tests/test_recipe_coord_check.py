"""recipes/coord_check.py: config composition, real runs (single and multirun), exit codes, wandb offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError


ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "coord_check.py"
FAST = ["model=resmlp", "sizes=[32,64,128,256]", "fast=true", "model.depth=2"]



@pytest.mark.parametrize("model", ["gpt", "resmlp", "mlp"])
@pytest.mark.parametrize("scheme", ["sp", "mup", "depth_mup", "completep"])
def test_every_group_composes(hydra_conf, model, scheme):
    cfg = compose("coord_check", overrides=[f"model={model}", f"scheme={scheme}"])
    assert cfg.model.family == model and cfg.scheme.name == scheme
    assert cfg.sizes and cfg.logger.name == "none"


def test_schema_rejects_typos_and_wrong_types(hydra_conf):
    with pytest.raises(ConfigCompositionException):
        compose("coord_check", overrides=["stepz=3"])
    with pytest.raises((ValidationError, ConfigCompositionException)):
        compose("coord_check", overrides=["steps=many"])


def run(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WANDB_MODE": "disabled", **env}
    return subprocess.run([sys.executable, str(RECIPE), *args], capture_output=True, text=True, timeout=600,
                          env=environment, cwd=tmp)


def test_pass_exits_zero_and_writes_files(tmp_path):
    out = tmp_path / "run"
    proc = run([*FAST, "scheme=mup", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "PASS" in (out / "summary.md").read_text()
    assert json.loads((out / "coord_check.json").read_text())["ok"] is True
    assert (out / "coord_check.png").stat().st_size > 10_000
    assert (out / ".hydra" / "config.yaml").exists()


def test_fail_exits_nonzero_and_still_writes_files(tmp_path):
    out = tmp_path / "run"
    proc = run([*FAST, "scheme=sp", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 1
    assert "FAIL" in (out / "summary.md").read_text()
    assert json.loads((out / "coord_check.json").read_text())["ok"] is False


def test_too_few_sizes_exit_two_with_the_reason(tmp_path):
    out = tmp_path / "run"
    proc = run([*FAST, "sizes=[64,128,256]", "scheme=mup", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "INCONCLUSIVE" in summary and "too few" in summary


def test_depth_axis(tmp_path):
    out = tmp_path / "run"
    proc = run(["model=resmlp", "axis=depth", "sizes=[2,4,8,16]", "scheme=completep", "fast=true", "model.width=128",
                f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "residual stream (last block)" in (out / "summary.md").read_text()


def test_real_multirun_over_schemes(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run(["-m", *FAST, "scheme=sp,mup", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdicts = {json.loads((sweep / str(i) / "coord_check.json").read_text())["ok"] for i in (0, 1)}
    assert verdicts == {True, False}
    assert (sweep / "multirun.yaml").exists()


@pytest.mark.slow
def test_wandb_offline_writes_files(tmp_path):
    pytest.importorskip("wandb", reason="wandb is in the dev extra")
    out = tmp_path / "run"
    proc = run([*FAST, "scheme=mup", "logger=wandb", f"hydra.run.dir={out}"], tmp_path, WANDB_MODE="offline",
               WANDB_API_KEY="")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def test_unknown_model_family(tmp_path):
    out = tmp_path / "run"
    proc = run(["model.family=transformerxl", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode != 0
    assert "unknown model family 'transformerxl'" in proc.stderr + proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("scheme, code", [("mup", 0), ("sp", 1)])
def test_transformers_llama_through_the_recipe(tmp_path, scheme, code):
    pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")
    out = tmp_path / "run"
    proc = run(["model=hf_llama", f"scheme={scheme}", "sizes=[64,128,256,512]", "model.base_width=64",
                "lr=0.001", "fast=true", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ("PASS" if code == 0 else "FAIL") in (out / "summary.md").read_text()
