"""More wrong inputs a new user makes (with tests/test_validation.py, the suite of user mistakes): each raises an
HptError naming the argument or config key, changes nothing, and leaves nothing that blocks the corrected rerun.
The recipes exit with the code for a configuration mistake (3), one line instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose
from torch import nn

import hptransfer as hpt
from hptransfer.errors import HptError, InitError
from hptransfer.models import GPT
from hptransfer.pipeline.stages import prepare

from conftest import meta

ROOT = Path(__file__).resolve().parents[1]


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4))


def gpt(width: int, device: str = "cpu") -> GPT:
    with torch.device(device):
        return GPT(d_model=width, n_layer=2, n_head=2, vocab_size=32, block_size=8)


def refused(call, *words: str, error: type = HptError) -> str:
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, HptError), type(info.value)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    return message


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return hpt.get_plan(model) is None and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- parametrize / param_groups / build_optimizer -------------------------------------------------------------
PARAMETRIZE = {
    "unknown scheme": ({"scheme": "mu_p"}, "mu_p"),
    "negative multiplier": ({"multipliers": {"output": -1.0}}, "'output'=-1"),
    "misspelled multiplier": ({"multipliers": {"outptu": 2.0}}, "outptu"),
    "nan multiplier": ({"multipliers": {"output": float("nan")}}, "'output'=nan"),
    "string multiplier": ({"multipliers": {"output": "2"}}, "'output'='2'"),
    "readout glob matching nothing": ({"readout": "head"}, "readout=['head']"),
    "branches glob matching nothing": ({"scheme": "completep", "branches": ["blocks.*"]}, "blocks.*"),
    "attention glob matching nothing": ({"attention": {"x.*": "scale"}}, "x.*"),
    "unknown adapter": ({"adapter": "nosuch"}, "nosuch"),
    "base of the wrong type": ({"base": 16}, "base must be"),
    "delta of the wrong type": ({"delta": 5}, "delta must be"),
    "base of another model": ({"base": nn.Linear(3, 3)}, "no counterpart in the base"),
    "missing shapes file": ({"base": "/nonexistent/shapes.json"}, "/nonexistent/shapes.json"),
    "inputs the model cannot take": ({"example_inputs": torch.randn(2, 9)}, "example_inputs"),
}


@pytest.mark.parametrize("case", PARAMETRIZE, ids=list(PARAMETRIZE))
def test_parametrize_refuses_and_leaves_the_model_alone(case):
    kwargs, words = PARAMETRIZE[case]
    model = mlp(64)
    before = snapshot(model)
    call = {"base": meta(mlp, 16), "scheme": "mup", **kwargs}
    refused(lambda: hpt.parametrize(model, call.pop("base"), call.pop("scheme"), **call), words)
    assert unchanged(model, before)
    hpt.parametrize(model, meta(mlp, 16), "mup")  # the corrected call works on the same model


def test_a_malformed_shapes_file_names_the_file(tmp_path):
    path = tmp_path / "base.json"
    path.write_text("{not json")
    model = mlp(64)
    refused(lambda: hpt.parametrize(model, str(path), "mup"), str(path))
    assert hpt.get_plan(model) is None


def test_rescaling_a_model_on_the_meta_device_is_refused():
    model = meta(mlp, 64)
    refused(lambda: hpt.parametrize(model, meta(mlp, 16), "mup"), "meta device", "init='keep'", error=InitError)
    assert hpt.get_plan(model) is None


def test_parametrize_twice_and_param_groups_before_parametrize():
    model = mlp(64)
    refused(lambda: hpt.param_groups(model, lr=1e-3), "parametrize")
    hpt.parametrize(model, meta(mlp, 16), "mup")
    refused(lambda: hpt.parametrize(model, meta(mlp, 16), "mup"), "already parametrized")
    refused(lambda: hpt.build_optimizer(model, "adamx", lr=1e-3), "'adamx'")
    refused(lambda: hpt.param_groups(model, lr=1e-3, optimizer="adamx"), "'adamx'")


def trained(model: nn.Module, batches: int = 5) -> nn.Module:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for i in range(batches):
        if isinstance(model, GPT):
            x = torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(i))
            loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
        else:
            loss = model(torch.randn(16, 8, generator=torch.Generator().manual_seed(i))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("kind, base_device", [("gpt", "meta"), ("gpt", "cpu"), ("mlp", "cpu")])
def test_rescale_refuses_loaded_weights_and_points_at_keep(kind, base_device):
    """A model loaded from a checkpoint is not re-initialized by the default init='rescale' (any model, not only
    transformers families): refused with the evidence, and init='keep' takes it unchanged."""
    build = gpt if kind == "gpt" else mlp
    state = trained(build(64)).state_dict()
    model = build(64)
    model.load_state_dict(state)
    base = build(32, base_device) if kind == "gpt" else (meta(mlp, 16) if base_device == "meta" else mlp(16))
    message = refused(lambda: hpt.parametrize(model, base, "mup"), "init='keep'", "not a fresh init", error=InitError)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and hpt.get_plan(model) is None
    assert ("LayerNorm" in message) if kind == "gpt" else ("default init in the base" in message)
    hpt.parametrize(model, base, "mup", init="keep")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items() if k in state)


@pytest.mark.parametrize("base_device", ["meta", "cpu"])
def test_rescale_takes_fresh_models(base_device):
    """The control: freshly built models are rescaled as before."""
    for build, width in ((gpt, 32), (mlp, 16)):
        base = build(width, base_device) if build is gpt else (meta(mlp, 16) if base_device == "meta" else mlp(16))
        hpt.parametrize(build(64), base, "mup")


# ---- coord_check ----------------------------------------------------------------------------------------------
def built(width: int) -> nn.Module:
    model = mlp(width)
    hpt.parametrize(model, meta(mlp, 16), "mup")
    return model


def on_meta(width: int) -> nn.Module:
    model = meta(mlp, width)
    hpt.parametrize(model, meta(mlp, 16), "mup", check=False, init="keep")
    return model


DATA = (torch.randn(2, 8), torch.randint(0, 4, (2,)))
COORD = {
    "no data": (dict(build=built, data=None), "data=NoneType"),
    "a tensor as data": (dict(build=built, data=torch.randn(2, 8)), "data=Tensor"),
    "a model instead of build": (dict(build=mlp(16), data=DATA), "build=Sequential"),
    "build returns no module": (dict(build=lambda width: width, data=DATA), "build(16) returned int"),
    "a model on the meta device": (dict(build=on_meta, data=DATA), "meta device"),
    "sizes as a string": (dict(build=built, data=DATA, sizes="16,32,64"), "sizes='16,32,64'"),
    "an unknown device": (dict(build=built, data=DATA, device="gpu"), "device='gpu'"),
    "cuda where there is none": (dict(build=built, data=DATA, device="cuda"), "device='cuda'"),
}


@pytest.mark.parametrize("case", COORD, ids=list(COORD))
def test_coord_check_refuses(case):
    kwargs, words = COORD[case]
    if case == "cuda where there is none" and torch.cuda.is_available():
        kwargs = dict(kwargs, device="cuda:99")
        words = "cuda:99"
    kwargs = {"sizes": [16, 32, 64, 128], "steps": 1, "seeds": 1, **kwargs}
    build = kwargs.pop("build")
    data = kwargs.pop("data")
    with pytest.raises(Exception) as info:
        hpt.coord_check(build, kwargs.pop("sizes"), data=data, **kwargs)
    if case == "cuda where there is none" and torch.cuda.is_available():
        return  # a machine with CUDA: torch's own error for a device index it lacks is fine
    assert isinstance(info.value, HptError) and words in str(info.value), str(info.value)


def test_coord_check_on_a_small_batch_is_not_a_false_alarm():
    """The control, and the safety net's noise: a 16-wide base on 2 samples strays far between draws; the check
    widens its tolerance by the spread it measured, so none of 6 seeds is refused."""
    for seed in range(6):
        torch.manual_seed(seed)
        data = (torch.randn(2, 8), torch.randint(0, 4, (2,)))
        assert hpt.coord_check(built, [16, 32, 64, 128], data=data).verdict == "PASS"


# ---- the recipes' config, checked by prepare() before anything is read or written ----------------------------
CONFIG = [
    ("train.schedule=exp", "train.schedule='exp'"), ("train.parallel=mpi", "train.parallel='mpi'"),
    ("optim.name=adamx", "optim.name='adamx'"), ("optim.adjust_lr_fn=fast", "optim.adjust_lr_fn='fast'"),
    ("proxy.axis=height", "proxy.axis='height'"), ("train.device=gpu", "train.device='gpu'"),
    ("optim.betas=[0.9,1.5]", "optim.betas entry=1.5"), ("optim.momentum=1.5", "optim.momentum=1.5"),
    ("data.val_fraction=0", "data.val_fraction=0"), ("data.val_fraction=1", "data.val_fraction=1"),
    ("train.eval_every=-1", "train.eval_every=-1"), ("train.checkpoint_every=-1", "train.checkpoint_every=-1"),
    ("sweep.heartbeat_s=-1", "sweep.heartbeat_s=-1"), ("coord_check.seeds=0", "coord_check.seeds=0"),
    ("coord_check.sizes=[]", "coord_check.sizes=[]"), ("coord_check.batch_size=0", "coord_check.batch_size=0"),
    ("model.depth=0", "model.depth=0"), ("optim.warmup_frac=-0.1", "optim.warmup_frac=-0.1"),
    ("train.min_lr_frac=-0.1", "train.min_lr_frac=-0.1"), ("scheme.name=mu_p", "scheme.name='mu_p'"),
    ("sweep.kind=grid", "sweep.kind='grid'"), ("data.kind=csv", "data.kind='csv'"),
    ("train.seq_len=128", "train.seq_len=128"), ("coord_check.seq_len=4000", "coord_check.seq_len=4000"),
    ("data=tokens data.path=MISSING", "does not exist"), ("model.family=transformerxl", "transformerxl"),
    ("axes.seeds=[0,-1]", "axes.seeds entry=-1"), ("axes.seeds=[1,1]", "repeats a seed"),
    ("axes.window=0", "axes.window=0"),
]


@pytest.mark.parametrize("override, words", CONFIG, ids=[c[0] for c in CONFIG])
def test_recipe_config_mistake_is_refused_before_anything_is_written(hydra_conf, tmp_path, monkeypatch, override,
                                                                    words):
    monkeypatch.chdir(tmp_path)
    cfg = compose("mutransfer", overrides=["experiment=smoke", *override.replace("MISSING", str(tmp_path / "no.bin"))
                                           .split()])
    refused(lambda: prepare(cfg), words)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content, words", [
    ("", "vocabulary of 0"), ("abc" * 10, "too few for train.seq_len=32"),
], ids=["empty file", "shorter than a window"])
def test_data_too_small_is_refused_before_the_ledger(hydra_conf, tmp_path, monkeypatch, content, words):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(content)
    monkeypatch.chdir(tmp_path)
    cfg = compose("mutransfer", overrides=["experiment=smoke", f"data.path={corpus}"])
    refused(lambda: prepare(cfg), words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


# ---- the recipes as commands: exit codes and one line ---------------------------------------------------------
def command(recipe: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled", **env})


@pytest.mark.parametrize("recipe, args, words", [
    ("mutransfer", ["train.steps=-5"], "error: train.steps=-5"),
    ("mutransfer", ["model=transformer"], "Could not find 'model/transformer'"),
    ("mutransfer", ["train.stepz=3"], "stepz"),
    ("coord_check", ["lr=-1"], "error: lr=-1"),
    ("coord_check", ["model.family=transformerxl"], "transformerxl"),
    ("tune", ["optim.name=adamx"], "error: optim.name='adamx'"),
], ids=["bad value", "unknown group", "unknown key", "coord bad value", "coord unknown model", "tune bad name"])
def test_a_configuration_mistake_exits_3_with_one_line(tmp_path, recipe, args, words):
    proc = command(recipe, [*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "trials.db").exists() and not (tmp_path / "run" / "run_state.json").exists()


def test_the_traceback_is_behind_a_flag(tmp_path):
    proc = command("mutransfer", ["train.steps=-5", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path,
                   HPT_FULL_ERROR="1")
    assert proc.returncode == 3 and "Traceback" in proc.stderr and "error: train.steps=-5" in proc.stderr


def test_short_data_fails_at_start_and_the_corrected_rerun_uses_the_same_dir(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("tiny")
    out = tmp_path / "run"
    args = ["experiment=smoke", "coord_check.enabled=false", "proxy.sizes=[32]", "train.steps=8",
            f"data.path={corpus}", f"hydra.run.dir={out}"]
    first = command("mutransfer", args, tmp_path)
    assert first.returncode == 3 and "too few for train.seq_len" in first.stderr
    assert not (out / "trials.db").exists()
    corpus.write_text((ROOT / "README.md").read_text())
    second = command("mutransfer", args, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads((out / "run_state.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_the_error_table_in_the_docs_is_what_the_code_says():
    """docs/errors.md's table is generated from these cases; regenerated here, it must match the file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("error_table", ROOT / "docs" / "error_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    rows = table.rows()
    assert rows and not [r for r in rows if r[2].startswith("bare") or r[2] == "accepted"]
    written = (ROOT / "docs" / "errors.md").read_text().split(table.MARKER)[1]
    for where, what, kind, message in rows:
        assert f"| {where} | `{what}` | {kind} | {message.replace('|', chr(92) + '|')} |" in written, (what, message)
