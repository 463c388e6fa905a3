"""Optimizers beyond Adam and SGD: the rule families (derived, and measured on real steps), the Muon + AdamW
hybrid (its split, its state_dict), Lion, the error for an unknown optimizer, and coordinate checks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import hptransfer as hpt
from hptransfer.errors import SchemeError
from hptransfer.models import GPT
from hptransfer.rules import OPTIMIZER_FAMILIES, SCHEMES

VOCAB = 48
BATCH = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))


def gpt(width: int, device: str | None = None) -> GPT:
    kwargs = dict(d_model=width, n_layer=2, n_head=4, vocab_size=VOCAB, block_size=16)
    if device is None:
        return GPT(**kwargs)
    with torch.device(device):
        return GPT(**kwargs)


def parametrized(width: int, scheme: str = "mup", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = gpt(width)
    hpt.parametrize(model, gpt(64, "meta"), scheme, delta=gpt(128, "meta"))
    return model


def one_step(model: GPT, name: str, lr: float, **kwargs) -> dict[str, torch.Tensor]:
    """Each parameter's change after one step on BATCH."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = hpt.build_optimizer(model, name, lr=lr, **kwargs)
    loss = F.cross_entropy(model(BATCH).flatten(0, 1), BATCH.flatten())
    loss.backward()
    opt.step()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


# ---- the rules -------------------------------------------------------------------------------------------
def test_family_factors_follow_from_the_role_rules():
    plan = hpt.get_plan(parametrized(256))
    hidden = [r for r in plan.params.values() if r.role == "hidden"]
    assert hidden
    for rec in plan.params.values():
        assert rec.lr["sign"] == rec.lr["adam"]  # Lion: sign update, entries +-1 like Adam's
        assert rec.lr["adafactor"] == pytest.approx(rec.lr["adam"] / rec.init_std)  # step ~ RMS(W) ~ init std
    for rec in hidden:  # width multiplier 4 on both fans: Adam 1/4, init 1/2, Muon's spectral target 1
        assert rec.lr["adam"] == pytest.approx(0.25) and rec.lr["adafactor"] == pytest.approx(0.5)
        assert rec.lr["muon"] == pytest.approx((rec.fan_out_mult / rec.fan_in_mult) ** 0.5)
    assert set(OPTIMIZER_FAMILIES) == {"adam", "sgd", "sign", "adafactor", "muon"}


def test_adafactor_lion_and_schedulefree_steps_scale_like_adams_under_mup():
    """Measured: the per-entry step of a hidden matrix shrinks like 1/fan_in (mu-P's Adam rule) with each."""
    name = "blocks.0.mlp.branch.1.weight"
    for optimizer, lr in (("adamw", 1e-3), ("lion", 1e-4), ("adafactor", 1e-2), ("schedulefree_adamw", 1e-3)):
        rms = {w: float(one_step(parametrized(w), optimizer, lr)[name].pow(2).mean().sqrt()) for w in (64, 256)}
        assert rms[256] / rms[64] == pytest.approx(0.25, rel=0.15), (optimizer, rms)


def spectral_ratio(scheme: str, width: int, adjust: str) -> float:
    """||dW||_2 / sqrt(fan_out / fan_in) of a hidden matrix after one Muon step (lr 0.02)."""
    delta = one_step(parametrized(width, scheme), "muon", 0.02, adjust_lr_fn=adjust)["blocks.0.mlp.branch.1.weight"]
    fan_out, fan_in = delta.shape
    return float(torch.linalg.matrix_norm(delta, ord=2)) / (fan_out / fan_in) ** 0.5


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_muon_step_meets_the_spectral_condition_under_mup_and_drifts_without(adjust):
    mup = [spectral_ratio("mup", w, adjust) for w in (64, 128, 256)]
    assert max(mup) / min(mup) < 1.15, mup  # flat across 4x
    naive = [spectral_ratio("sp", w, adjust) for w in (64, 128, 256)]
    if adjust == "match_rms_adamw":  # torch's adjustment grows like sqrt(max(fan_out, fan_in))
        assert naive[-1] / naive[0] == pytest.approx(2.0, rel=0.15), naive
    else:  # Jordan's original adjustment is already width-stable for matrices of a fixed aspect ratio
        assert max(naive) / min(naive) < 1.15, naive


# ---- the hybrid ---------------------------------------------------------------------------------------------
def test_muon_hybrid_puts_hidden_matrices_on_muon_also_at_the_base_width():
    for width in (64, 256):  # 64 is the base's own shape: the delta tells the roles
        model = parametrized(width)
        opt = hpt.build_optimizer(model, "muon", lr=0.02, weight_decay=0.1)
        assert isinstance(opt, hpt.MuonWithAdamW)
        names = {id(p): n for n, p in model.named_parameters()}
        on_muon = {names[id(p)] for g in opt.param_groups if g["algorithm"] == "muon" for p in g["params"]}
        plan = hpt.get_plan(model)
        assert on_muon == {n for n, r in plan.params.items() if r.role == "hidden" and len(r.shape) == 2}
        assert "wte.weight" not in on_muon and "lm_head.weight" not in on_muon and on_muon
    model = gpt(64)
    hpt.parametrize(model, gpt(64, "meta"), "mup")  # no delta: the roles cannot be told
    with pytest.raises(SchemeError, match="delta="):
        hpt.build_optimizer(model, "muon", lr=0.02)


def test_muon_hybrid_state_dict_round_trip_and_schedulers():
    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(BATCH).flatten(0, 1), BATCH.flatten()).backward()
            opt.step()

    model = parametrized(128)
    opt = hpt.build_optimizer(model, "muon", lr=0.02, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    train(model, opt, 2)
    scheduler.step()
    assert all(g["lr"] == pytest.approx(0.5 * g["initial_lr"]) for g in opt.param_groups)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(model, opt, 2)

    fresh = parametrized(128, seed=1)
    fresh.load_state_dict(saved_model)
    restored = hpt.build_optimizer(fresh, "muon", lr=0.02, weight_decay=0.1)
    restored.load_state_dict(saved_opt)
    train(fresh, restored, 2)
    for (n, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), n  # bit for bit: Muon momentum and AdamW moments both restored

    unrestored = parametrized(128, seed=1)  # negative control: the same weights, no optimizer state
    unrestored.load_state_dict(saved_model)
    plain = hpt.build_optimizer(unrestored, "muon", lr=0.02, weight_decay=0.1)
    for g, s in zip(plain.param_groups, saved_opt["param_groups"]):
        g["lr"] = s["lr"]
    train(unrestored, plain, 2)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), unrestored.parameters()))


def test_schedulefree_adamw_takes_adams_groups_and_starts_in_train_mode():
    model = parametrized(256)
    opt = hpt.build_optimizer(model, "schedulefree_adamw", lr=1e-3, weight_decay=0.1)
    adam = hpt.build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1)
    assert type(opt).__name__ == "AdamWScheduleFree"
    for ours, theirs in zip(opt.param_groups, adam.param_groups, strict=True):
        assert (ours["lr"], ours["weight_decay"], ours["eps"]) == (theirs["lr"], theirs["weight_decay"], theirs["eps"])
    assert len({g["lr"] for g in opt.param_groups}) > 1  # really scaled per group
    assert all(g["train_mode"] for g in opt.param_groups)  # step() raises outside train mode
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):  # after one step x = y = z; they part from the second
        opt.zero_grad()
        F.cross_entropy(model(BATCH).flatten(0, 1), BATCH.flatten()).backward()
        opt.step()
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with hpt.optim.evaluation_weights(opt):  # the averaged weights differ from the training point
        assert any(not torch.equal(p, trained[n]) for n, p in model.named_parameters())
    # and training resumes at y (up to the rounding of the two lerps)
    assert all(torch.allclose(p, trained[n], rtol=0, atol=1e-6) for n, p in model.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_schedulefree_without_its_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "schedulefree", None)  # import fails as if it were not installed
    with pytest.raises(SchemeError, match="pip install schedulefree"):
        hpt.build_optimizer(parametrized(64), "schedulefree_adamw", lr=1e-3)


def test_lion_step_is_the_sign_rule():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = hpt.Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.3, -0.1, 0.0])
    opt.step()  # m = 0: sign(0.1 g) = sign(g); decay first: p * (1 - 0.05)
    assert torch.allclose(p.detach(), torch.tensor([0.95 - 0.1, -1.9 + 0.1, 2.85]))
    assert torch.allclose(opt.state[p]["exp_avg"], 0.01 * torch.tensor([0.3, -0.1, 0.0]))


def test_unknown_optimizer_names_the_families_and_registration_works():
    model = parametrized(256)
    with pytest.raises(SchemeError, match=r"(?s)'rmsprop' has no scaling rules.*sign.*register_optimizer"):
        hpt.build_optimizer(model, "rmsprop", lr=1e-3)
    with pytest.raises(SchemeError, match="family"):
        hpt.register_optimizer("mystery", "newton", lambda g, kw: torch.optim.SGD(g))
    hpt.register_optimizer("rmsprop", "adam", lambda groups, kw: torch.optim.RMSprop(groups, **kw), eps=True)
    try:
        opt = hpt.build_optimizer(model, "rmsprop", lr=1e-3)
        adam = hpt.build_optimizer(model, "adamw", lr=1e-3)
        assert isinstance(opt, torch.optim.RMSprop)
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in adam.param_groups]
    finally:
        from hptransfer.optim import OPTIMIZERS

        OPTIMIZERS.pop("rmsprop")


def test_an_optimizer_that_cannot_step_sharded_parameters_is_refused_on_them(monkeypatch):
    """The refusal follows the registry's data: Adafactor and any optimizer registered with unsharded_only are
    refused on FSDP2-sharded parameters (the 2-rank run in test_optim.py shards for real), others are not."""
    from hptransfer.optim import build, registry

    model = parametrized(256)
    hpt.register_optimizer("local_sgd", "sgd", lambda groups, kw: torch.optim.SGD(groups), unsharded_only="a reason")
    try:
        assert isinstance(hpt.build_optimizer(model, "local_sgd", lr=1e-2), torch.optim.SGD)  # not sharded
        monkeypatch.setattr(build, "_sharded", lambda params: True)
        for name, reason in (("local_sgd", "a reason"), ("adafactor", "DTensor rejects")):
            with pytest.raises(SchemeError, match=rf"'{name}' cannot train FSDP2-sharded parameters: .*{reason}.*"
                                                  r"train.parallel=ddp"):
                hpt.build_optimizer(model, name, lr=1e-2)
        assert isinstance(hpt.build_optimizer(model, "adamw", lr=1e-2), torch.optim.AdamW)
    finally:
        registry.OPTIMIZERS.pop("local_sgd")


# ---- coordinate checks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer,lr", [("muon", 0.02), ("lion", 3e-4), ("adafactor", 1e-2),
                                          ("schedulefree_adamw", 1e-2)])
def test_coord_check_passes_mup_and_fails_the_naive_setup(optimizer, lr):
    kwargs = dict(data=(BATCH[:1, :8], BATCH[:1, 1:9]), optimizer=optimizer, lr=lr, steps=3, seeds=2)
    mup = hpt.coord_check(lambda w: parametrized(w), [64, 128, 256, 512], **kwargs)
    assert mup.verdict == "PASS", mup.summary()
    naive = hpt.coord_check(lambda w: parametrized(w, "sp"), [64, 128, 256, 512], **kwargs)
    assert naive.verdict == "FAIL", naive.summary()
    assert SCHEMES["sp"].width["hidden"].muon_lr.fan_in == 0  # the naive table really has no Muon rule
