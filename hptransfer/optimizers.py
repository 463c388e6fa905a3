"""Optimizers by name, each tied to a family of rules: build_optimizer() returns one ready torch optimizer.

The registry maps a name to its family in ``rules.OPTIMIZER_FAMILIES`` (which LR factor each parameter gets)
and to a builder. Known names: adam, adamw, sgd (torch), adafactor (torch.optim.Adafactor), lion (Lion, below)
muon (torch.optim.Muon on the hidden matrices, AdamW on everything else, as one optimizer) and
schedulefree_adamw (the ``schedulefree`` package's AdamWScheduleFree, when it is installed). Declare your own
with ``register_optimizer(name, family, build)``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from .errors import SchemeError
from .rules import OPTIMIZER_FAMILIES


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer: its rule family, whether groups carry an Adam ``eps``, how to build it, and why it
    cannot step FSDP2-sharded (DTensor) parameters, if it cannot (``None``: it can)."""

    family: str
    build: Callable[[list[dict[str, Any]], dict[str, Any]], torch.optim.Optimizer]
    eps: bool = False
    unsharded_only: str | None = None


def _evaluate(closure: Callable[[], Any] | None) -> Any:
    """The closure's loss, with gradients on (torch optimizers' step(closure) convention)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): step by the sign of an interpolation of momentum and gradient, decoupled decay.

    ``p -= lr * (sign(beta1 * m + (1 - beta1) * g) + weight_decay * p)``, then ``m = beta2 * m + (1 - beta2) * g``.
    Its LR is typically 3-10x smaller than AdamW's and its weight decay as much larger.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: lr={lr} must be >= 0 and betas={betas} in [0, 1)")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                momentum = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(momentum.mul(beta1).add(p.grad, alpha=1 - beta1)), alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon for the groups marked ``algorithm="muon"`` (2-D hidden matrices), torch.optim.AdamW for
    the rest, behind one Optimizer: LR schedulers, ``state_dict`` and checkpoints see one set of param groups
    and one state (the two inner optimizers share both)."""

    def __init__(self, groups: list[dict[str, Any]], muon: dict[str, Any] | None = None,
                 adamw: dict[str, Any] | None = None) -> None:
        self._muon_kwargs, self._adamw_kwargs = dict(muon or {}), dict(adamw or {})
        super().__init__(groups, {})
        self._inner: list[torch.optim.Optimizer] = []
        for algorithm, cls, kwargs in (("muon", torch.optim.Muon, self._muon_kwargs),
                                       ("adamw", torch.optim.AdamW, self._adamw_kwargs)):
            mine = [g for g in self.param_groups if g.get("algorithm") == algorithm]
            if mine:
                self._inner.append(cls(mine, **kwargs))  # fills each group's defaults in place: shared dicts
        self._link()

    def _link(self) -> None:
        for inner in self._inner:
            algorithm = "muon" if isinstance(inner, torch.optim.Muon) else "adamw"
            inner.param_groups = [g for g in self.param_groups if g.get("algorithm") == algorithm]
            inner.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._link()  # loading replaced the group dicts and the state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        for inner in self._inner:
            inner.step()
        return loss


MUON_KEYS = ("momentum", "nesterov", "ns_coefficients", "ns_steps", "adjust_lr_fn")


def _muon(groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    muon = {k: v for k, v in kwargs.items() if k in MUON_KEYS}
    adamw = {k: v for k, v in kwargs.items() if k not in MUON_KEYS}
    return MuonWithAdamW(groups, muon=muon, adamw=adamw)


def _schedulefree_adamw(groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    # Its averaging weights each group by its own lr_max**2 over that group's running sum, so a per-group LR
    # factor cancels there and scales only the step: the adam rules carry over unchanged.
    try:
        import schedulefree
    except ImportError as err:
        raise SchemeError("optimizer 'schedulefree_adamw' needs the schedulefree package: pip install "
                          "schedulefree (or choose adamw)") from err
    return schedulefree.AdamWScheduleFree(groups, **kwargs)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec("adam", lambda g, kw: torch.optim.Adam(g, **kw), eps=True),
    "adamw": OptimizerSpec("adam", lambda g, kw: torch.optim.AdamW(g, **kw), eps=True),
    "sgd": OptimizerSpec("sgd", lambda g, kw: torch.optim.SGD(g, **kw)),
    "adafactor": OptimizerSpec("adafactor", lambda g, kw: torch.optim.Adafactor(g, **kw), unsharded_only=(
        "torch.optim.Adafactor's step runs in-place ops on the norms of a sharded tensor, which DTensor rejects "
        "(aten.pow_ on a _NormPartial placement)")),
    "lion": OptimizerSpec("sign", lambda g, kw: Lion(g, **kw)),
    "muon": OptimizerSpec("muon", _muon),
    "schedulefree_adamw": OptimizerSpec("adam", _schedulefree_adamw, eps=True),
}


def _has_modes(optimizer: torch.optim.Optimizer) -> bool:
    """Schedule-free optimizers carry train() and eval(); torch's own have neither."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


def training_weights(optimizer: torch.optim.Optimizer) -> None:
    """Put a schedule-free optimizer in training mode; idempotent, and a no-op for other optimizers.
    build_optimizer calls it; call it again after loading a saved state."""
    if _has_modes(optimizer):
        optimizer.train()


@contextlib.contextmanager
def evaluation_weights(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block the model holds the weights to evaluate and save; training resumes after it.

    A no-op for most optimizers. Schedule-free ones train at one point (y) and evaluate at another (their
    average x); they switch with ``optimizer.eval()`` / ``optimizer.train()``, which this calls.
    """
    switch = _has_modes(optimizer)
    if switch:
        optimizer.eval()
    try:
        yield
    finally:
        if switch:
            optimizer.train()


def register_optimizer(name: str, family: str, build: Callable[[list[dict[str, Any]], dict[str, Any]],
                       torch.optim.Optimizer], eps: bool = False, unsharded_only: str | None = None) -> None:
    """Declare an optimizer: ``family`` is the rule family it follows (a key of rules.OPTIMIZER_FAMILIES),
    ``build(groups, kwargs)`` makes it from hptransfer's param groups, ``eps`` whether groups carry Adam's eps,
    ``unsharded_only`` why it cannot step FSDP2-sharded parameters (build_optimizer then refuses them)."""
    if family not in OPTIMIZER_FAMILIES or family == "muon":
        raise SchemeError(f"family={family!r}: choose one of {sorted(set(OPTIMIZER_FAMILIES) - {'muon'})} (muon "
                          "groups need the hybrid split; use name='muon')")
    OPTIMIZERS[name] = OptimizerSpec(family, build, eps, unsharded_only)


def optimizer_spec(name: str) -> OptimizerSpec:
    """The registered optimizer ``name``, or an error that lists the known ones and how to add one."""
    if name not in OPTIMIZERS:
        families = ", ".join(f"{k} ({v.why})" for k, v in OPTIMIZER_FAMILIES.items())
        raise SchemeError(
            f"optimizer {name!r} has no scaling rules here; known: {sorted(OPTIMIZERS)}. If it updates like one "
            f"of the families [{families}], declare it with hptransfer.register_optimizer({name!r}, family, "
            "build), where build(groups, kwargs) returns the torch optimizer")
    return OPTIMIZERS[name]


def _sharded(params: Iterable[torch.Tensor]) -> bool:
    """Whether any parameter is a DTensor (FSDP2's fully_shard makes them so)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support cannot shard
        return False
    return any(isinstance(p, DTensor) for p in params)


def muon_lr_adjustment(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """The factor torch.optim.Muon applies to a matrix's LR (``_adjust_lr`` in torch): "original" (the
    default) sqrt(max(1, fan_out / fan_in)); "match_rms_adamw" 0.2 sqrt(max(fan_out, fan_in))."""
    fan_out, fan_in = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, fan_out / fan_in))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(fan_out, fan_in))
    raise SchemeError(f"adjust_lr_fn={adjust_lr_fn!r}: choose 'original' or 'match_rms_adamw' (torch.optim.Muon)")


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, *, eps: float = 1e-8,
                    adamw_lr: float | None = None, adjust_lr_fn: str = "original",
                    group_kwargs: dict[str, Any] | None = None, **optimizer_kwargs: Any) -> torch.optim.Optimizer:
    """One ready optimizer for a parametrized model, with every parameter's scaled LR, weight decay and eps.

    Args:
        name: a registered optimizer (adam, adamw, sgd, adafactor, lion, muon, schedulefree_adamw, or your
            own). A schedule-free optimizer needs ``optimizer.train()`` before training steps and
            ``optimizer.eval()`` before evaluating or saving (``evaluation_weights`` does both).
        lr: the base model's tuned LR. For muon it is the Muon LR of the hidden matrices; ``adamw_lr``
            (default: the same ``lr``) is the base LR of the AdamW part.
        adjust_lr_fn: torch.optim.Muon's LR adjustment; the groups divide it back out relative to the base's
            shapes, so the step's spectral norm follows mu-P's sqrt(fan_out / fan_in) with either choice.
        group_kwargs: more arguments of param_groups (independent_weight_decay, decay, scale_eps; a
            weight_decay or eps here wins over the arguments above).
        optimizer_kwargs: passed to the optimizer (e.g. betas, momentum; for muon, Muon's keys go to Muon and
            the others to AdamW).
    """
    from .optim import param_groups

    spec = optimizer_spec(name)
    if spec.unsharded_only and _sharded(model.parameters()):
        raise SchemeError(f"optimizer {name!r} cannot train FSDP2-sharded parameters: {spec.unsharded_only}. "
                          "Train with DDP (train.parallel=ddp) or one process, or choose another optimizer")
    options = {"weight_decay": weight_decay, "eps": eps, "adamw_lr": adamw_lr, "adjust_lr_fn": adjust_lr_fn,
               **(group_kwargs or {})}  # group_kwargs may also carry weight_decay or eps (coord_check's do)
    groups = param_groups(model, lr, optimizer=name, **options)
    if name == "muon":
        optimizer_kwargs = dict(optimizer_kwargs, adjust_lr_fn=options["adjust_lr_fn"])
    optimizer = spec.build(groups, optimizer_kwargs)
    training_weights(optimizer)
    return optimizer
