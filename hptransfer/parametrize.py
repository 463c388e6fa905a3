"""parametrize(): the one place that changes a model (forward multipliers, attention scale, init).

It first builds the complete Plan (every check runs before anything is touched, so a bad call changes
nothing), then installs the forward multipliers and re-scales the initial weights by the scheme's rules.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import nn as hnn
from .errors import AlreadyParametrizedError, BranchError, ReadoutError, SchemeError
from .plan import ModuleRecord, ParamRecord, Plan
from .roles import (View, block_of, collect_views, count_base_branches, find_branches, find_readouts)
from .rules import Scheme, get_scheme
from .shapes import BaseLike, BaseShapes, as_globs, load_base, match_base_name

log = logging.getLogger(__name__)

PLAN_ATTR = "_hpt_plan"
HOOKS_ATTR = "_hpt_hooks"
MULTIPLIER_NAMES = ("output", "input", "attn", "branch")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside torch.compile (``_orig_mod``) and DDP/DataParallel (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def get_plan(model: nn.Module) -> Plan | None:
    """The Plan a model was parametrized with, or None."""
    return getattr(unwrap(model), PLAN_ATTR, None)


# ---- forward multipliers ---------------------------------------------------------------------------
class ScaleOutput:
    """Forward hook: multiply a module's output (or the first element of a tuple output) by a constant."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output * self.factor
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (output[0] * self.factor,) + output[1:]
        raise TypeError(f"hptransfer cannot scale an output of type {type(output).__name__}; "
                        "wrap the branch so it returns a tensor")


class ScaleInput:
    """Forward pre-hook: multiply a module's first positional input by a constant (mup's readout form)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * self.factor,) + tuple(args[1:])


class AttentionScaleMode(TorchFunctionMode):
    """Rescales F.scaled_dot_product_attention logits by ``attn * sqrt(base_head_dim / head_dim)``."""

    def __init__(self, attn: float, base_head_dim: int | None) -> None:
        super().__init__()
        self.attn = attn
        self.base_head_dim = base_head_dim

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            head_dim = args[0].shape[-1]
            scale = kwargs.get("scale")
            scale = head_dim**-0.5 if scale is None else scale
            factor = self.attn
            if self.base_head_dim is not None:
                factor *= math.sqrt(self.base_head_dim / head_dim)
            kwargs = dict(kwargs, scale=scale * factor)
        return func(*args, **kwargs)


class AttentionScope:
    """Root-module hooks that enter AttentionScaleMode for the duration of the model's forward."""

    def __init__(self, attn: float, base_head_dim: int | None) -> None:
        self.attn = attn
        self.base_head_dim = base_head_dim
        self._active: list[AttentionScaleMode] = []

    def enter(self, module: nn.Module, args: Any) -> None:
        mode = AttentionScaleMode(self.attn, self.base_head_dim)
        mode.__enter__()
        self._active.append(mode)

    def exit(self, module: nn.Module, args: Any, output: Any) -> None:
        self._active.pop().__exit__(None, None, None)


# ---- planning --------------------------------------------------------------------------------------
def _check_multipliers(multipliers: Mapping[str, float] | None) -> dict[str, float]:
    merged = {name: 1.0 for name in MULTIPLIER_NAMES}
    for key, value in (multipliers or {}).items():
        if key not in merged:
            raise SchemeError(f"unknown multiplier {key!r}; the tunable ones are {list(MULTIPLIER_NAMES)}")
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SchemeError(f"multiplier {key!r}={value!r} must be a positive finite number")
        merged[key] = float(value)
    return merged


def _canonical_view(views: list[View], canonical: str, readouts: set[str]) -> tuple[View, str]:
    """The view that decides a tensor's role; a tensor used as input and as readout is tied: role input."""
    first = next(v for v in views if v.name == canonical)
    owners_roles = {("output" if (v.owner in readouts and v.leaf == "weight") else v.role) for v in views}
    if "input" in owners_roles and "output" in owners_roles:
        return next(v for v in views if v.role == "input"), "input"
    if first.owner in readouts and first.leaf == "weight":
        return first, "output"
    return first, first.role


def build_plan(
    model: nn.Module,
    base: BaseLike,
    scheme: str | Scheme = "mup",
    *,
    readout: str | Sequence[str] | None = None,
    branches: str | Sequence[str] | None = None,
    base_head_dim: int | None = None,
    multipliers: Mapping[str, float] | None = None,
    init: str | float = "rescale",
    delta: BaseLike | None = None,
) -> Plan:
    """Decide every factor for ``model`` relative to ``base`` without changing anything (see parametrize)."""
    rules = get_scheme(scheme)
    mults = _check_multipliers(multipliers)
    if not (init in ("rescale", "keep") or (isinstance(init, (int, float)) and not isinstance(init, bool)
                                            and init > 0)):
        raise SchemeError(f"init={init!r}: use 'rescale', 'keep' or a positive float sigma")
    root = unwrap(model)
    shapes: BaseShapes = load_base(base, delta)
    views, canonical = collect_views(root, shapes)
    readouts = find_readouts(root, views, as_globs(readout))
    branch_names = find_branches(root, as_globs(branches))
    if rules.uses_depth and not branch_names:
        raise BranchError(
            f"scheme {rules.name!r} scales residual branches with depth but none were found: pass "
            "branches=['blocks.*.attn', 'blocks.*.mlp'] (globs of the modules whose outputs are added to the "
            "residual stream) or build the blocks with hptransfer.nn.Residual"
        )
    base_branches = count_base_branches(branch_names, shapes) if branch_names else 0
    if branch_names and base_branches == 0:
        raise BranchError(f"the base has no modules matching the branches {branch_names[:4]}; "
                          "is the base built from the same model class?")
    depth_mult = len(branch_names) / base_branches if branch_names else 1.0
    blocks = {block_of(b) for b in branch_names}

    readout_views = [v for vs in views.values() for v in vs if v.owner in readouts and v.leaf == "weight"]
    hidden_fan_in = [v.fan_in_mult for vs in views.values() for v in vs if v.role == "hidden"]
    width_mult = readout_views[0].fan_in_mult if readout_views else max(hidden_fan_in, default=1.0)
    input_modules = sorted({v.owner for vs in views.values() for v in vs if v.role == "input"})
    if mults["output"] != 1.0 and not readouts:
        raise ReadoutError("multipliers['output'] is set but no readout was found: name it with readout=..."
                           " or pass delta= (a model at another width) so width dims are known")
    if mults["input"] != 1.0 and not input_modules:
        raise ReadoutError("multipliers['input'] is set but no input layer was found: pass delta= (a model "
                           "at another width) so hptransfer can tell which dims are width")

    plan = Plan(scheme=rules.name, depth_alpha=rules.depth_alpha, width_mult=width_mult,
                depth_mult=depth_mult, n_branches=len(branch_names), base_branches=base_branches,
                multipliers=mults, base_head_dim=base_head_dim, init=init)
    for tensor_id, tensor_views in views.items():
        name = canonical[tensor_id]
        view, role = _canonical_view(tensor_views, name, set(readouts))
        block = next((b for b in blocks if name.startswith(b + ".")), None)
        m_l = depth_mult if block else 1.0
        rule = rules.width[role]
        fi, fo = view.fan_in_mult, view.fan_out_mult
        lr = {"adam": rule.adam_lr(fi, fo) * rules.depth_factor("adam_lr", m_l),
              "sgd": rule.sgd_lr(fi, fo) * rules.depth_factor("sgd_lr", m_l)}
        # PyTorch couples decay to lr (p -= lr * wd * p): keep lr * wd width-invariant (mup MuAdamW, CompleteP).
        wd = {"adam": 1.0 / rule.adam_lr(fi, fo), "sgd": 1.0 / rule.sgd_lr(fi, fo)}
        eps = (1.0 / width_mult if rules.scale_eps else 1.0) * rules.depth_factor("eps", m_l)
        multiplier = rule.multiplier(fi, fo) * mults["output"] if role == "output" else (
            mults["input"] if role == "input" else 1.0)
        plan.params[name] = ParamRecord(
            name=name, shape=view.shape, base_shape=view.base_shape, role=role, block=block,
            fan_in_mult=fi, fan_out_mult=fo, depth_mult=m_l, init_std=rule.init_std(fi, fo),
            multiplier=multiplier, lr=lr, weight_decay=wd, eps=eps,
            aliases=[v.name for v in tensor_views if v.name != name])

    for name in readouts:
        view = next((v for v in readout_views if v.owner == name), None)
        fan_in = view.fan_in_mult if view else 1.0
        factor = rules.width["output"].multiplier(fan_in, 1.0) * mults["output"]
        plan.modules.append(ModuleRecord(name, "readout", factor))
    for name in input_modules:
        plan.modules.append(ModuleRecord(name, "input", mults["input"]))
    for name in branch_names:
        factor = mults["branch"] * rules.depth_factor("branch_multiplier", depth_mult)
        plan.modules.append(ModuleRecord(name, "branch", factor))
    if mults["attn"] != 1.0 or (rules.width_attention and base_head_dim is not None):
        plan.modules.append(ModuleRecord("", "attention", mults["attn"]))
    if rules.width_attention and base_head_dim is None and not _uses_native_attention(root):
        log.info("no base_head_dim given: attention inside the model keeps its 1/sqrt(d) scale; that is "
                 "right only if width grows by adding heads at a fixed head dim")
    return plan


def _uses_native_attention(root: nn.Module) -> bool:
    return any(isinstance(m, hnn.SelfAttention) for m in root.modules())


# ---- applying ---------------------------------------------------------------------------------------
def _install_multipliers(root: nn.Module, plan: Plan, shapes: BaseShapes, rules: Scheme) -> list[Any]:
    modules = dict(root.named_modules())
    handles: list[Any] = []
    for rec in plan.modules:
        if rec.kind == "attention":
            continue
        module = modules[rec.name]
        if rec.kind == "readout" and isinstance(module, (hnn.Readout, hnn.TiedReadout)):
            module.multiplier = rec.factor
        elif rec.kind == "branch" and isinstance(module, hnn.Residual):
            module.multiplier = rec.factor
        elif rec.factor != 1.0:
            hook = ScaleInput(rec.factor) if rec.kind == "readout" else ScaleOutput(rec.factor)
            handles.append(module.register_forward_pre_hook(hook) if rec.kind == "readout"
                           else module.register_forward_hook(hook))
    attention = next((m for m in plan.modules if m.kind == "attention"), None)
    native = [m for m in root.modules() if isinstance(m, hnn.SelfAttention)]
    for layer in native:
        factor = plan.multipliers["attn"]
        base_dim = plan.base_head_dim or _native_base_head_dim(layer, modules, shapes)
        if rules.width_attention and base_dim:
            factor *= math.sqrt(base_dim / layer.head_dim)
        layer.logit_scale_factor = factor
    if attention is not None and not native:
        scope = AttentionScope(plan.multipliers["attn"],
                               plan.base_head_dim if rules.width_attention else None)
        handles.append(root.register_forward_pre_hook(scope.enter))
        handles.append(root.register_forward_hook(scope.exit, always_call=True))
    return handles


def _native_base_head_dim(layer: hnn.SelfAttention, modules: dict[str, nn.Module],
                          shapes: BaseShapes) -> int | None:
    """Base head dim of an hptransfer.nn.SelfAttention, assuming the base has the same number of heads."""
    name = next(n for n, m in modules.items() if m is layer)
    proj, split = ("qkv", 3) if layer.fused_qkv else ("q", 1)
    base_name = match_base_name(f"{name}.{proj}.weight", shapes)
    if base_name is None or shapes.shapes[base_name][0] is None:
        return None
    return int(shapes.shapes[base_name][0]) // (split * layer.n_head)


def _default_std(module: nn.Module, leaf: str, shape: tuple[int, ...]) -> float | None:
    """PyTorch's default init std for this parameter at ``shape`` (None when there is no known default)."""
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and leaf in ("weight", "bias"):
        weight_shape = tuple(module.weight.shape) if leaf == "bias" else shape
        fan_in = weight_shape[1] * math.prod(weight_shape[2:])
        return 1.0 / math.sqrt(3.0 * fan_in)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and leaf == "weight":
        return 1.0
    return None


@torch.no_grad()
def _initialize(root: nn.Module, plan: Plan, base: BaseLike, shapes: BaseShapes, rules: Scheme) -> None:
    if plan.init == "keep" or (plan.init == "rescale" and not rules.rescale_init):
        return
    modules = dict(root.named_modules())
    params = dict(root.named_parameters())
    base_params = dict(base.named_parameters(remove_duplicate=False)) if isinstance(base, nn.Module) else {}
    not_default: list[str] = []
    # A bias keeps its base shape while its default std follows the weight's fan-in, so "at base shape" is
    # decided per owner module, over all of its parameters (aliases included).
    at_base_shape: dict[str, bool] = {}
    for rec in plan.params.values():
        for alias in [rec.name, *rec.aliases]:
            owner = alias.rpartition(".")[0]
            at_base_shape[owner] = at_base_shape.get(owner, True) and rec.shape == rec.base_shape
    for name, rec in plan.params.items():
        param = params[name]
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        if not isinstance(plan.init, str):
            _sigma_init(param, rec, owner, leaf, float(plan.init))
            continue
        if at_base_shape.get(owner_name, True):
            continue  # the owner module is at base shape: the model's own init *is* the base init
        current = float(param.float().std()) if param.numel() > 1 else 0.0
        if current == 0.0:
            continue  # constant init (norm gains, zero-init readouts) is width-independent
        base_param = base_params.get(match_base_name(name, shapes) or name)
        if base_param is not None and not base_param.is_meta:
            base_std = float(base_param.float().std()) if base_param.numel() > 1 else 0.0
            if base_std == 0.0:
                continue
            ratio = base_std * rec.init_std / current
        else:
            weight_rec = _record_or_none(plan, f"{owner_name}.weight" if owner_name else "weight")
            ratio = _ratio_from_defaults(owner, leaf, param, rec, weight_rec, current, name, not_default)
        if abs(ratio - 1.0) > 1e-12:
            param.mul_(ratio)
    if not_default:
        warnings.warn(
            f"{len(not_default)} parameter(s) do not look PyTorch-default initialized "
            f"({', '.join(not_default[:4])}{' ...' if len(not_default) > 4 else ''}); hptransfer assumed their "
            "init std is width-independent and applied the scheme's factor to it. Pass a real (non-meta) base "
            "model to measure the base std instead, or init=<sigma>.", stacklevel=3)


def _ratio_from_defaults(owner: nn.Module, leaf: str, param: torch.Tensor, rec: ParamRecord,
                         weight_rec: ParamRecord | None, current: float, name: str,
                         not_default: list[str]) -> float:
    """Rescale factor assuming the base had PyTorch-default init at its own shape.

    Default Linear/Conv weights and biases have std proportional to fan_in^-1/2 of the weight, so the base's
    std is the current one times sqrt(fan_in_mult). A parameter with no known default (or one whose std
    shows a custom init) is assumed to have a width-independent init: it just gets the rule's factor.
    """
    default_now = _default_std(owner, leaf, tuple(param.shape))
    if default_now is None:
        return rec.init_std
    tolerance = 0.25 + 3.0 / math.sqrt(param.numel())
    if abs(current / default_now - 1.0) >= tolerance:
        not_default.append(name)
        return rec.init_std
    if isinstance(owner, (nn.Embedding, nn.EmbeddingBag)):
        return rec.init_std  # N(0, 1) at every shape
    fan_in_mult = weight_rec.fan_in_mult if weight_rec is not None else 1.0
    return math.sqrt(fan_in_mult) * rec.init_std


def _record_or_none(plan: Plan, name: str) -> ParamRecord | None:
    try:
        return plan.record(name)
    except KeyError:
        return None


def _sigma_init(param: torch.Tensor, rec: ParamRecord, owner: nn.Module, leaf: str, sigma: float) -> None:
    """Re-initialize by role with global std sigma: weights N(0, (sigma * init factor)^2), biases 0."""
    if isinstance(owner, hnn.Readout) and owner.zero_init:
        param.zero_()
    elif param.dim() >= 2 or isinstance(owner, (nn.Embedding, nn.EmbeddingBag)):
        param.normal_(0.0, sigma * rec.init_std)
    elif leaf == "bias":
        param.zero_()
    elif param.numel() > 1 and float(param.float().std()) > 0:
        param.normal_(0.0, sigma * rec.init_std)


def parametrize(
    model: nn.Module,
    base: BaseLike,
    scheme: str | Scheme = "mup",
    *,
    readout: str | Sequence[str] | None = None,
    branches: str | Sequence[str] | None = None,
    base_head_dim: int | None = None,
    multipliers: Mapping[str, float] | None = None,
    init: str | float = "rescale",
    delta: BaseLike | None = None,
) -> Plan:
    """Parametrize ``model`` in place under ``scheme`` relative to ``base`` and return its Plan.

    Args:
        model: the target module, already built (any device).
        base: the base/proxy shapes: an nn.Module (meta device is fine), a {name: shape} mapping, or a path
            to a shapes file (hptransfer JSON from save_shapes, or mup .bsh).
        scheme: "sp", "mup", "depth_mup" (alpha 1/2), "completep" (alpha 1), or a rules.Scheme.
        readout: glob(s) of the output layer(s); auto-detected when None.
        branches: glob(s) of residual-branch modules (their output is added to the residual stream).
            Needed by depth schemes unless the model uses hptransfer.nn.Residual. m_L = #model/#base branches.
        base_head_dim: head dim of the base; attention done with F.scaled_dot_product_attention then gets
            logits ``attn * sqrt(base_head_dim) / head_dim`` without code changes.
        multipliers: tunable width/depth-independent constants "output", "input", "attn", "branch" (default 1).
        init: "rescale" (init std follows the rule relative to the base), "keep", or a float sigma.
        delta: optional second model/shapes at another width; dims that differ between base and delta are
            width dims even where the model has the base's size (lets a proxy equal to the base find its
            readout and input layers).

    Returns:
        The Plan; the model remembers it (``hptransfer.get_plan(model)``).
    """
    root = unwrap(model)
    if getattr(root, PLAN_ATTR, None) is not None:
        raise AlreadyParametrizedError(
            "this model is already parametrized (it carries a Plan); build a fresh model, or call "
            "hptransfer.unparametrize(model) first"
        )
    shapes = load_base(base, delta)  # read the base (and any file) once; build_plan reuses it
    plan = build_plan(root, shapes, scheme, readout=readout, branches=branches, base_head_dim=base_head_dim,
                      multipliers=multipliers, init=init)
    rules = get_scheme(scheme)
    _initialize(root, plan, base, shapes, rules)
    handles = _install_multipliers(root, plan, shapes, rules)
    setattr(root, PLAN_ATTR, plan)
    setattr(root, HOOKS_ATTR, handles)
    return plan


def unparametrize(model: nn.Module) -> None:
    """Remove forward multipliers and the Plan (weights keep their current values)."""
    root = unwrap(model)
    for handle in getattr(root, HOOKS_ATTR, []):
        handle.remove()
    for module in root.modules():
        if isinstance(module, (hnn.Readout, hnn.TiedReadout, hnn.Residual)):
            module.multiplier = 1.0
        if isinstance(module, hnn.SelfAttention):
            module.logit_scale_factor = 1.0
    for attr in (PLAN_ATTR, HOOKS_ATTR):
        if hasattr(root, attr):
            delattr(root, attr)
