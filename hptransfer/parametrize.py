"""parametrize(): the one place that changes a model (forward multipliers, attention scale, init).

It first builds the complete Plan (every check runs before anything is touched, so a bad call changes
nothing), then installs the forward multipliers and re-scales the initial weights by the scheme's rules.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from . import nn as hnn
from .adapters.base import Adapter, AttentionSite, Structure, find_adapter
from .attention import AttentionError, AttentionScope, head_dim_of, inside, mup_factor, probe_attention
from .errors import AlreadyParametrizedError, BranchError, ReadoutError, SchemeError
from .init import initialize
from .plan import ModuleRecord, ParamRecord, Plan
from .roles import (View, block_of, collect_views, count_base_branches, find_branches, find_readouts)
from .rules import OPTIMIZER_FAMILIES, Scheme, get_scheme
from .shapes import BaseLike, BaseShapes, as_globs, index_pattern, load_base, match_any, match_base_name

log = logging.getLogger(__name__)

PLAN_ATTR = "_hpt_plan"
HOOKS_ATTR = "_hpt_hooks"
ORIGINALS_ATTR = "_hpt_attention_originals"
# Embedding rms advised for depth transfer at alpha > 1/2: measured on HF Llama (depths 2..16, CompleteP),
# 0.02 x 20 = 0.4 passes the depth check where 0.02 fails.
DEPTH_EMBEDDING_RMS = 0.4
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
    structure: Structure | None = None,
) -> Plan:
    """Decide every factor for ``model`` relative to ``base`` without changing anything (see parametrize)."""
    rules = get_scheme(scheme)
    mults = _check_multipliers(multipliers)
    if not (init in ("rescale", "keep") or (isinstance(init, (int, float)) and not isinstance(init, bool)
                                            and init > 0)):
        raise SchemeError(f"init={init!r}: use 'rescale', 'keep' or a positive float sigma")
    root = unwrap(model)
    shapes: BaseShapes = load_base(base, delta)
    structure = structure or Structure(adapter="")
    views, canonical = collect_views(root, shapes)
    readouts = find_readouts(root, views, as_globs(readout) or structure.readout)
    branch_globs = as_globs(branches) or (structure.branches or [])
    branch_names = find_branches(root, branch_globs)
    if rules.uses_depth and not branch_names:
        if structure.branch_note:
            raise BranchError(f"scheme {rules.name!r} scales residual branches with depth, and {structure.adapter} "
                              f"has none: {structure.branch_note}")
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
    input_modules = sorted({v.owner for vs in views.values() for v in vs if v.role == "input"}
                           | set(structure.inputs))
    if mults["output"] != 1.0 and not readouts:
        raise ReadoutError("multipliers['output'] is set but no readout was found: name it with readout=..."
                           " or pass delta= (a model at another width) so width dims are known")
    if mults["input"] != 1.0 and not input_modules:
        raise ReadoutError("multipliers['input'] is set but no input layer was found: pass delta= (a model "
                           "at another width) so hptransfer can tell which dims are width")

    plan = Plan(scheme=rules.name, depth_alpha=rules.depth_alpha, width_mult=width_mult,
                depth_mult=depth_mult, n_branches=len(branch_names), base_branches=base_branches,
                multipliers=mults, base_head_dim=base_head_dim, init=init,
                adapter=structure.adapter or None)
    for tensor_id, tensor_views in views.items():
        name = canonical[tensor_id]
        view, role = _canonical_view(tensor_views, name, set(readouts))
        block = next((b for b in blocks if name.startswith(b + ".")), None)
        m_l = depth_mult if block else 1.0
        rule = rules.width[role]
        fi, fo = view.fan_in_mult, view.fan_out_mult
        lr = {name: family.lr(rule, fi, fo) * rules.depth_factor(family.depth_lr, m_l)
              for name, family in OPTIMIZER_FAMILIES.items()}
        # PyTorch couples decay to lr (p -= lr * wd * p): keep lr * wd width-invariant (mup MuAdamW, CompleteP).
        wd = {name: 1.0 / family.lr(rule, fi, fo) for name, family in OPTIMIZER_FAMILIES.items()}
        eps = (1.0 / width_mult if rules.scale_eps else 1.0) * rules.depth_factor("eps", m_l)
        multiplier = rule.multiplier(fi, fo) * mults["output"] if role == "output" else (
            mults["input"] if role == "input" else 1.0)
        plan.params[name] = ParamRecord(
            name=name, shape=view.shape, base_shape=view.base_shape, role=role, block=block,
            fan_in_mult=fi, fan_out_mult=fo, depth_mult=m_l, init_std=rule.init_std(fi, fo),
            multiplier=multiplier, lr=lr, weight_decay=wd, eps=eps,
            aliases=[v.name for v in tensor_views if v.name != name])

    if rules.depth_alpha is not None and depth_mult != 1.0:
        plan.notes.append("in-block LR factors beyond Adam and SGD: Muon's hidden matrices get none (no depth rule "
                          "is published for it); Lion and Adafactor get Adam's by analogy (unverified)")
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
    embedding_rms = structure.input_std * mults["input"] if structure.input_std else None
    if rules.uses_depth and rules.depth_alpha > 0.5 and embedding_rms is not None and embedding_rms < 0.1:
        plan.notes.append(
            f"the embeddings start at std {structure.input_std:g} x input multiplier {mults['input']:g}; with "
            f"branches scaled by L^-{rules.depth_alpha:g} the embedding has to carry the residual stream and is too "
            f"small next to the branches (the stream then shrinks with depth): pass multipliers={{'input': "
            f"{round(DEPTH_EMBEDDING_RMS / structure.input_std):d}}} (embedding rms about {DEPTH_EMBEDDING_RMS:g})")
    return plan


def _attention_sites(root: nn.Module, structure: Structure, attention: Mapping[str, str] | None) -> list[AttentionSite]:
    """The adapter's attention modules plus those the user names with ``attention={glob: attribute}``."""
    sites = {s.module: s for s in structure.attention}
    modules = dict(root.named_modules())
    for glob, attribute in (attention or {}).items():
        hits = [n for n in modules if n and match_any(n, [glob])]
        if not hits:
            raise AttentionError(f"attention glob {glob!r} matched no module; module names look like "
                                 f"{', '.join([n for n in modules if n][:8])}")
        for name in hits:
            value = getattr(modules[name], attribute, None)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise AttentionError(
                    f"attention={{{glob!r}: {attribute!r}}}: module {name!r} has no float attribute {attribute!r} "
                    "(it must hold the factor your forward multiplies q @ k^T by, e.g. self.scale = head_dim ** -0.5)")
            head_dim = head_dim_of(modules[name])
            if head_dim is None:
                raise AttentionError(
                    f"attention module {name!r}: cannot tell its head dim; give it an int attribute head_dim")
            sites[name] = AttentionSite(name, attribute, head_dim)
    return list(sites.values())


def _plan_attention(root: nn.Module, plan: Plan, rules: Scheme, sites: list[AttentionSite], base: BaseLike,
                    base_head_dim: int | None) -> None:
    """Attention records: one per attribute site (the factor on its attribute), and the root interception."""
    base_modules = dict(base.named_modules()) if isinstance(base, nn.Module) else {}
    modules = dict(root.named_modules())
    pattern_index = {index_pattern(n): n for n in base_modules}
    base_dims = set()
    for site in sites:
        factor = plan.multipliers["attn"]
        if rules.width_attention:
            base_name = site.module if site.module in base_modules else pattern_index.get(index_pattern(site.module))
            base_module = base_modules.get(base_name) if base_name else None
            base_dim = head_dim_of(base_module) if base_module is not None else base_head_dim
            if base_dim is None:
                raise AttentionError(
                    f"attention module {site.module!r}: cannot tell the base's head dim; pass base_head_dim= or the "
                    "base as a model (the meta device is fine)")
            base_dims.add(base_dim)
            current = float(getattr(modules[site.module], site.attribute))
            # without a base module, assume the usual 1/sqrt(d) law for the base's scale
            base_scale = float(getattr(base_module, site.attribute, current * math.sqrt(site.head_dim / base_dim)))
            # mu-P: the base's scale carried over with 1/d instead of 1/sqrt(d) (TP5 App. B.1)
            factor *= base_scale * (base_dim / site.head_dim) / current if current else 1.0
        plan.modules.append(ModuleRecord(site.module, "attention", factor, site.attribute))
    if plan.base_head_dim is None and len(base_dims) == 1:
        plan.base_head_dim = base_dims.pop()
    if rules.width_attention or plan.multipliers["attn"] != 1.0:
        plan.modules.append(ModuleRecord("", "attention", plan.multipliers["attn"]))


# ---- applying ---------------------------------------------------------------------------------------
def _install_multipliers(root: nn.Module, plan: Plan, shapes: BaseShapes, rules: Scheme) -> tuple[list[Any], AttentionScope | None]:
    modules = dict(root.named_modules())
    handles: list[Any] = []
    originals: dict[str, float] = {}
    for rec in plan.modules:
        if rec.kind == "attention":
            if rec.attribute is not None:
                originals[rec.name] = getattr(modules[rec.name], rec.attribute)
                if rec.factor != 1.0:
                    setattr(modules[rec.name], rec.attribute, originals[rec.name] * rec.factor)
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
    setattr(root, ORIGINALS_ATTR, originals)
    native = [m for m in root.modules() if isinstance(m, hnn.SelfAttention)]
    for layer in native:
        factor = plan.multipliers["attn"]
        base_dim = plan.base_head_dim or _native_base_head_dim(layer, modules, shapes)
        if rules.width_attention and base_dim:
            factor *= math.sqrt(base_dim / layer.head_dim)
        layer.logit_scale_factor = factor
    scope = None
    if any(m.kind == "attention" and m.attribute is None for m in plan.modules) and not native:
        scope = AttentionScope(plan.multipliers["attn"], plan.base_head_dim if rules.width_attention else None)
        scope.handles.append(root.register_forward_pre_hook(scope.enter))
        scope.handles.append(root.register_forward_hook(scope.exit, always_call=True))
        covered = [rec.name for rec in plan.modules if rec.kind == "attention" and rec.attribute is not None]
        for name in covered:  # their calls already carry the new scale: the mode must not scale them again
            scope.handles.append(modules[name].register_forward_pre_hook(scope.enter_covered))
            scope.handles.append(modules[name].register_forward_hook(scope.exit_covered, always_call=True))
        handles += scope.handles
    return handles, scope


def _drop_scope(plan: Plan, scope: AttentionScope) -> None:
    """Remove the SDPA interception when the probe found no SDPA call that needs it (no per-forward cost)."""
    for handle in scope.handles:
        handle.remove()
    scope.handles.clear()
    plan.modules = [m for m in plan.modules if not (m.kind == "attention" and m.attribute is None)]


def _native_base_head_dim(layer: hnn.SelfAttention, modules: dict[str, nn.Module],
                          shapes: BaseShapes) -> int | None:
    """Base head dim of an hptransfer.nn.SelfAttention, assuming the base has the same number of heads."""
    name = next(n for n, m in modules.items() if m is layer)
    proj, split = ("qkv", 3) if layer.fused_qkv else ("q", 1)
    base_name = match_base_name(f"{name}.{proj}.weight", shapes)
    if base_name is None or shapes.shapes[base_name][0] is None:
        return None
    return int(shapes.shapes[base_name][0]) // (split * layer.n_head)


# ---- attention verification ---------------------------------------------------------------------------
def _as_args(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    return (inputs,), {}


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _base_head_dims(base: Any, args: tuple, kwargs: dict) -> dict[str, int] | None:
    """Head dim per attention module pattern, from one forward of the base (meta is fine); None if it cannot run."""
    if not isinstance(base, nn.Module):
        return None
    device = next(base.parameters()).device
    try:
        calls = probe_attention(base, lambda: base(*_to_device(args, device), **_to_device(kwargs, device)))
    except Exception as err:  # an op without a meta kernel (flex_attention), data-dependent control flow, ...
        if device.type != "meta":
            log.info("could not run the base to read its head dims (%s)", err)
            return None
        try:  # the base is small: give it CPU memory with arbitrary values; only the shapes of the calls matter
            cpu = copy.deepcopy(base).to_empty(device="cpu")
            with torch.no_grad():
                for tensor in [*cpu.parameters(), *cpu.buffers()]:
                    tensor.normal_(0.0, 0.02) if tensor.is_floating_point() else tensor.zero_()
            calls = probe_attention(cpu, lambda: cpu(*_to_device(args, torch.device("cpu")),
                                                     **_to_device(kwargs, torch.device("cpu"))))
        except Exception as err2:
            log.info("could not run the base to read its head dims (%s; on the CPU: %s)", err, err2)
            return None
    return {index_pattern(c.module): c.head_dim for c in calls}


def verify_attention(root: nn.Module, plan: Plan, scope: AttentionScope | None, base: Any, args: tuple,
                     kwargs: dict) -> bool:
    """Run one probe forward and refuse attention that needs a new scale hptransfer cannot give it; returns
    whether any SDPA call needs the interception.

    Calls inside attribute-scaled modules and hptransfer.nn.SelfAttention are reached; SDPA and flex calls
    elsewhere are reached through the scope once the base's head dim is known (read from the base when it runs,
    meta included); hand-written softmax attention elsewhere is allowed only where its scale need not change.
    """
    covered = {m.name for m in plan.modules if m.kind == "attention" and m.attribute is not None}
    covered |= {n for n, m in root.named_modules() if isinstance(m, hnn.SelfAttention)}
    calls = probe_attention(root, lambda: root(*args, **kwargs))
    loose = [c for c in calls if not (covered and inside(c.module, covered))]
    if not loose:
        return False
    at_base = all(r.shape == r.base_shape for r in plan.params.values())
    base_dims: dict[str, int] | None = None
    for call in loose:
        if call.kind == "sdpa" and scope is not None and scope.base_head_dim is not None:
            continue
        if base_dims is None:
            base_dims = _base_head_dims(base, args, kwargs) or {}
        base_dim = base_dims.get(index_pattern(call.module), plan.base_head_dim)
        if base_dim is None and at_base:
            base_dim = call.head_dim
        where = call.module or "the model's own forward"
        if base_dim is None:
            raise AttentionError(
                f"attention ({call.kind}) in {where!r} with head dim {call.head_dim}: hptransfer cannot tell the "
                "base's head dim, so it cannot set mu-P's 1/d logit scale. Pass base_head_dim=<the base's head "
                "dim>, or the base as a model that runs on the meta device.")
        if call.kind == "sdpa" and scope is not None:
            scope.base_head_dim = base_dim
            plan.base_head_dim = base_dim
            continue
        factor = mup_factor(plan.multipliers["attn"], base_dim, call.head_dim)
        if abs(factor - 1.0) > 1e-9:
            what = "flex_attention" if call.kind == "flex" else "hand-written (softmax over q @ k^T)"
            raise AttentionError(
                f"attention in {where!r} is {what}, head dim {call.head_dim}, base "
                f"{base_dim}, and hptransfer cannot reach its scale: under {plan.scheme!r} its logits must be "
                f"multiplied by {factor:.4g} (mu-P's sqrt(d0)/d instead of 1/sqrt(d)). Fix it one of three ways: "
                "compute it with F.scaled_dot_product_attention (rescaled automatically); keep the scale in a float "
                "attribute your forward multiplies q @ k^T by (or passes as flex_attention(..., scale=self.scale)) "
                "and pass attention={'<glob of the module>': '<attribute>'}; or use hptransfer.nn.SelfAttention.")
    return any(c.kind == "sdpa" for c in loose)


class _FirstForwardCheck:
    """Root pre-hook that verifies attention on the first real forward, then removes itself."""

    def __init__(self, plan: Plan, scope: AttentionScope | None, base: Any) -> None:
        self.plan, self.scope, self.base = plan, scope, base
        self.handle: Any = None
        self.running = False

    @torch._dynamo.disable
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.running or self.handle is None:
            return None
        self.running = True
        try:
            verify_attention(module, self.plan, self.scope, self.base, args, kwargs)
        finally:
            self.running = False
        self.handle.remove()
        self.handle = None
        return None


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
    adapter: str | Adapter | None = "auto",
    attention: Mapping[str, str] | None = None,
    example_inputs: Any = None,
) -> Plan:
    """Parametrize ``model`` in place under ``scheme`` relative to ``base`` and return its Plan.

    Args:
        model: the target module, already built (any device).
        base: the base/proxy shapes: an nn.Module (meta device is fine), a {name: shape} mapping, or a path
            to a shapes file (hptransfer JSON from save_shapes, or mup .bsh).
        scheme: "sp", "mup", "depth_mup" (alpha 1/2), "completep" (alpha 1), or a rules.Scheme.
        readout: glob(s) of the output layer(s); auto-detected (or from the adapter) when None.
        branches: glob(s) of residual-branch modules (their output is added to the residual stream).
            Needed by depth schemes unless the model uses hptransfer.nn.Residual or an adapter knows them.
            m_L = #model/#base branches.
        base_head_dim: head dim of the base. Read from the base itself when it is a model (its attention
            modules, or one probe forward on the meta device); needed only when that is impossible.
        multipliers: tunable width/depth-independent constants "output", "input", "attn", "branch" (default 1).
        init: "rescale" (init std follows the rule relative to the base), "keep" (e.g. pretrained weights),
            or a float sigma (redraw every weight with std sigma x the rule's factor).
        delta: optional second model/shapes at another width; dims that differ between base and delta are
            width dims even where the model has the base's size (lets a proxy equal to the base find its
            readout and input layers).
        adapter: "auto" (by the model's class, see hptransfer.adapters), an adapter name or object, or None.
        attention: {module glob: attribute} for hand-written attention that multiplies q @ k^T by a float
            attribute of its module; hptransfer scales that attribute.
        example_inputs: inputs for one probe forward that checks every attention is reached (a tensor, a tuple
            of positional args or a dict of keyword args). Without it (and without an adapter that makes
            some), the check runs on the model's first forward.

    Returns:
        The Plan; the model remembers it (``hptransfer.get_plan(model)``).

    Raises:
        AttentionError: under a mu-P scheme, attention whose logit scale must change but cannot be reached.
        InitError: with a meta base, a custom init whose width law is ambiguous (pass a real base or a sigma).
    """
    root = unwrap(model)
    if getattr(root, PLAN_ATTR, None) is not None:
        raise AlreadyParametrizedError(
            "this model is already parametrized (it carries a Plan); build a fresh model, or call "
            "hptransfer.unparametrize(model) first"
        )
    shapes = load_base(base, delta)  # read the base (and any file) once; build_plan reuses it
    found = find_adapter(root, adapter)
    structure = found.describe(root, base, shapes) if found is not None else None
    plan = build_plan(root, shapes, scheme, readout=readout, branches=branches, base_head_dim=base_head_dim,
                      multipliers=multipliers, init=init, structure=structure)
    rules = get_scheme(scheme)
    _plan_attention(root, plan, rules, _attention_sites(root, structure or Structure(""), attention), base,
                    base_head_dim)
    handles, scope = _install_multipliers(root, plan, shapes, rules)
    setattr(root, PLAN_ATTR, plan)
    setattr(root, HOOKS_ATTR, handles)
    base_params = dict(base.named_parameters(remove_duplicate=False)) if isinstance(base, nn.Module) else {}
    try:  # both decide before they change anything: on an error the model is left as it came
        if rules.width_attention or plan.multipliers["attn"] != 1.0:
            if example_inputs is None and structure is not None and structure.example_inputs is not None:
                example_inputs = structure.example_inputs()
            if example_inputs is not None:
                if not verify_attention(root, plan, scope, base, *_as_args(example_inputs)) and scope is not None:
                    _drop_scope(plan, scope)
            else:
                check = _FirstForwardCheck(plan, scope, base)
                check.handle = root.register_forward_pre_hook(check, with_kwargs=True)
                handles.append(check.handle)
        initialize(root, plan, base_params, lambda name: match_base_name(name, shapes),
                   structure.init if structure else None, rules.rescale_init)
    except Exception:
        unparametrize(root)
        raise
    return plan


def unparametrize(model: nn.Module) -> None:
    """Remove forward multipliers, attention scales and the Plan (weights keep their current values)."""
    root = unwrap(model)
    for handle in getattr(root, HOOKS_ATTR, []):
        handle.remove()
    plan = getattr(root, PLAN_ATTR, None)
    modules = dict(root.named_modules())
    for name, value in getattr(root, ORIGINALS_ATTR, {}).items():
        attribute = next(m.attribute for m in plan.modules if m.name == name and m.attribute) if plan else None
        if attribute:
            setattr(modules[name], attribute, value)
    for module in root.modules():
        if isinstance(module, (hnn.Readout, hnn.TiedReadout, hnn.Residual)):
            module.multiplier = 1.0
        if isinstance(module, hnn.SelfAttention):
            module.logit_scale_factor = 1.0
    for attr in (PLAN_ATTR, HOOKS_ATTR, ORIGINALS_ATTR):
        if hasattr(root, attr):
            delattr(root, attr)
