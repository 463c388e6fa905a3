"""Wrong numbers at the door: param_groups / build_optimizer, parametrize, coord_check and the recipes' config.
Each must raise an HptError whose message names the argument (or config key) and the bad value, before anything
is built, trained or written; the controls (valid values) pass."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose
from torch import nn

import hptransfer as hpt
from hptransfer.errors import HptError
from hptransfer.models import PlainGPT
from hptransfer.optim import build_optimizer, param_groups
from hptransfer.pipeline.stages import PipelineError, prepare
from hptransfer.validate import number

from conftest import meta


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4))


@pytest.fixture(scope="module")
def model():
    net = mlp(64)
    hpt.parametrize(net, meta(mlp, 16), "mup")
    return net


def raises_naming(call, error, *words):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, HptError)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return info.value


BAD_LR = [-1e-3, 0, 0.0, float("nan"), float("inf"), "1e-3", True, None]


@pytest.mark.parametrize("lr", BAD_LR, ids=repr)
def test_param_groups_refuses_a_bad_lr(model, lr):
    raises_naming(lambda: param_groups(model, lr), hpt.ArgumentError, "lr=", repr(lr))


@pytest.mark.parametrize("lr", BAD_LR, ids=repr)
def test_build_optimizer_refuses_a_bad_lr_before_torch_sees_it(model, lr):
    raises_naming(lambda: build_optimizer(model, "adamw", lr=lr), hpt.ArgumentError, "lr=", repr(lr))


@pytest.mark.parametrize("kwargs, key", [
    ({"weight_decay": -0.1}, "weight_decay=-0.1"), ({"weight_decay": float("nan")}, "weight_decay=nan"),
    ({"weight_decay": "0.1"}, "weight_decay='0.1'"), ({"eps": 0.0}, "eps=0.0"), ({"eps": -1e-8}, "eps=-1e-08"),
    ({"adamw_lr": 0.0}, "adamw_lr=0.0"), ({"adamw_lr": -1.0}, "adamw_lr=-1.0"),
])
def test_param_groups_refuses_bad_decay_eps_and_adamw_lr(model, kwargs, key):
    raises_naming(lambda: param_groups(model, 1e-3, **kwargs), hpt.ArgumentError, key)


def test_good_values_pass_and_zero_decay_is_allowed(model):
    groups = param_groups(model, 1e-3, weight_decay=0.0, eps=1e-8)
    assert groups and all(g["lr"] > 0 for g in groups)
    assert isinstance(build_optimizer(model, "adamw", lr=2, weight_decay=0.1), torch.optim.AdamW)  # an int LR is a number


def gpt(width: int) -> PlainGPT:
    return PlainGPT(d_model=width, n_layer=1, n_head=4, vocab_size=32, block_size=16)


@pytest.mark.parametrize("value", [0, -16, 4.5, True, "16", float("nan")], ids=repr)
def test_parametrize_refuses_a_bad_base_head_dim_and_leaves_the_model_alone(value):
    net = gpt(128)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    raises_naming(lambda: hpt.parametrize(net, meta(gpt, 32), "mup", base_head_dim=value), hpt.ArgumentError,
                  f"base_head_dim={value!r}")
    assert hpt.get_plan(net) is None and all(torch.equal(before[n], p) for n, p in net.named_parameters())


def test_parametrize_takes_a_good_base_head_dim():
    assert hpt.parametrize(gpt(128), meta(gpt, 32), "mup", base_head_dim=8).base_head_dim == 8


@pytest.mark.parametrize("init", [float("nan"), float("inf"), -0.02, 0.0, "random", True], ids=repr)
def test_parametrize_refuses_a_bad_init(init):
    raises_naming(lambda: hpt.parametrize(mlp(64), meta(mlp, 16), "mup", init=init), hpt.SchemeError,
                  f"init={init!r}")


def coord_data():
    return torch.randn(4, 8), torch.randint(0, 4, (4,))


@pytest.mark.parametrize("kwargs, key", [
    ({"lr": -1e-2}, "lr=-0.01"), ({"lr": 0.0}, "lr=0.0"), ({"lr": float("nan")}, "lr=nan"),
    ({"steps": 0}, "steps=0"), ({"steps": -1}, "steps=-1"), ({"steps": 2.5}, "steps=2.5"),
    ({"seeds": 0}, "seeds=0"),
])
def test_coord_check_refuses_bad_numbers_before_building_a_model(kwargs, key):
    built = []

    def build(width):
        built.append(width)
        net = mlp(width)
        hpt.parametrize(net, meta(mlp, 16), "mup")
        return net

    raises_naming(lambda: hpt.coord_check(build, [16, 32, 64], data=coord_data(), **kwargs), HptError, key)
    assert not built


CONFIG_MISTAKES = [
    ("train.steps=-5", "train.steps=-5"), ("train.steps=0", "train.steps=0"),
    ("train.batch_size=0", "train.batch_size=0"), ("train.seq_len=0", "train.seq_len=0"),
    ("train.min_lr_frac=2", "train.min_lr_frac=2"), ("train.grad_clip=-1", "train.grad_clip=-1"),
    ("train.diverge_factor=0.5", "train.diverge_factor=0.5"), ("train.eval_batches=0", "train.eval_batches=0"),
    ("optim.lr=-0.001", "optim.lr=-0.001"), ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1"),
    ("optim.warmup_frac=1.5", "optim.warmup_frac=1.5"), ("optim.eps=0", "optim.eps=0"),
    ("model.width=0", "model.width=0"), ("model.base_width=-64", "model.base_width=-64"),
    ("proxy.sizes=[0,32]", "proxy.sizes entry=0"), ("proxy.sizes=[]", "proxy.sizes=[]"),
    ("sweep.n_trials=0", "sweep.n_trials=0"), ("sweep.stale_after_s=0", "sweep.stale_after_s=0"),
    ("coord_check.lr=0", "coord_check.lr=0"), ("coord_check.steps=0", "coord_check.steps=0"),
    ("lr=-0.01", "lr=-0.01"), ("sweep=lr_grid sweep.log2_lr_step=0", "sweep.log2_lr_step=0"),
    ("sweep=search ++sweep.space.momentum=[0.5,0.9]", "sweep.space.momentum"),
    ("sweep=search sweep.space.lr=[0.1,0.0001]", "sweep.space.lr"),
]


@pytest.mark.parametrize("override, words", CONFIG_MISTAKES, ids=[c[0] for c in CONFIG_MISTAKES])
def test_recipe_config_mistakes_name_the_key(hydra_conf, override, words):
    cfg = compose("mutransfer", overrides=["experiment=smoke", *override.split()])
    raises_naming(lambda: prepare(cfg), HptError, words)


def test_the_smoke_config_passes_the_checks(hydra_conf):
    assert prepare(compose("mutransfer", overrides=["experiment=smoke"])).settings.steps > 0
    assert prepare(compose("mutransfer", overrides=["experiment=smoke", "sweep=search"])).sweep.is_search()


def test_number_refuses_what_is_not_a_finite_real():
    for value in (True, "3", None, float("nan"), float("-inf"), [1]):
        with pytest.raises(hpt.ArgumentError):
            number("x", value)
    assert number("x", 3, minimum=1, integer=True) == 3 and number("x", 3.0, integer=True) == 3
    with pytest.raises(PipelineError, match=r"x=1.5: must be an integer >= 1; give a count"):
        number("x", 1.5, minimum=1, integer=True, error=PipelineError, fix="give a count")
    assert math.isclose(number("x", 0.5, above=0, below=1), 0.5)


@pytest.mark.parametrize("url, words", [
    ("notaurl", "is not a database URL"),
    ("nosuchdb://host/db", "is not a database URL"),
    ("postgresql+psycopg://nobody@127.0.0.1:1/hpt", "cannot connect"),
    ("sqlite:////nonexistent-dir/sub/trials.db", "cannot connect"),
])
def test_a_bad_storage_url_names_sweep_storage_before_any_ledger(hydra_conf, tmp_path, url, words):
    cfg = compose("mutransfer", overrides=["experiment=smoke", f"sweep.storage='{url}'"])
    raises_naming(lambda: prepare(cfg), PipelineError, f"sweep.storage={url!r}", words)
    assert not list(tmp_path.iterdir())


def test_a_good_storage_url_passes(hydra_conf, tmp_path):
    url = f"sqlite:///{tmp_path / 'trials.db'}"
    assert prepare(compose("mutransfer", overrides=["experiment=smoke", f"sweep.storage='{url}'"])).sweep.storage == url
