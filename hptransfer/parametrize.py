"""parametrize(): the one entry that changes a model. It runs the stages in order:

probe (one forward: each parameter's use, each attention call) -> structure (base matching, roles, readouts,
branches) -> plan (every factor, hptransfer.decide) -> attention (the scale each call needs and the attribute
that sets it) -> install (forward multipliers, attention scales, family constants, init) -> check (the model at
init against its base, measured). Every decision is made before anything changes, so a refusal before the
install leaves the model as it came; a refusal of the check undoes the install.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from . import nn as hnn
from .adapters import Adapter, Knowledge, find_adapter
from .check import base_with_values, refusal, run_check
from .decide import decide
from .errors import (AlreadyParametrizedError, ArgumentError, AttentionError, BaseShapeError, CheckError, HptError,
                     InitError, SchemeError)
from .install import initialize, install, native_factor, uninstall
from .install.multipliers import HOOKS_ATTR, add_attention
from .plan import ModuleRecord, Plan
from .probe.run import value_stats
from .probe import (AttentionCall, AttentionRecorder, Inputs, LayoutRecorder, MaterializeError, arbitrary_cpu_copy,
                    as_args, forward_of, inside, is_meta, materialize_base, run_probe, small_batch)
from .probe.scale_sites import find_scale_sites
from .rules import SCHEMES, Scheme, get_scheme
from .structure.attention import decide_attention
from .structure.match import Matcher
from .structure.read import read_structure
from .structure.roles import collect_views
from .structure.shapes import BaseLike, BaseShapes, as_globs, load_base, match_any
from .validate import number

log = logging.getLogger(__name__)

PLAN_ATTR = "_hpt_plan"
PROBE_BATCH = 8  # samples of the first real batch the measured stages use when there are no example inputs
STATE_ATTR = "_hpt_state"


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


@dataclass
class Measured:
    """What one probe forward of the model saw."""

    layout: dict[str, list] | None = None
    calls: list[AttentionCall] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


@dataclass
class Context:
    """Everything the stages share for one parametrize() call (kept on the model until its first forward when
    the probe has to wait for real inputs)."""

    base: Any
    shapes: BaseShapes
    matcher: Matcher
    rules: Scheme
    knowledge: Knowledge | None
    attention: dict[str, list[str]] | None  # module name -> attributes the user named
    check: bool
    base_head_dim: int | None
    call: dict[str, Any] = field(default_factory=dict)  # readout, branches, adapter, attention as the user gave them
    ratios: dict[str, float] = field(default_factory=dict)
    rebuilt: nn.Module | None = None  # the adapter's rebuild of a meta base (its real init)
    value_stats: dict[str, tuple[float, bool]] | None = None  # the model's means and constants, read once


def _measure(root: nn.Module, args: tuple, kwargs: dict, attention: bool) -> Measured:
    layout = LayoutRecorder(root)
    calls = AttentionRecorder()
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: order.append(n)) for n, m in root.named_modules()]
    try:
        run_probe(root, forward_of(root, args, kwargs), [layout, calls] if attention else [layout])
    finally:
        for handle in handles:
            handle.remove()
    return Measured(dict(layout.uses), calls.calls, order)


def _base_calls(base: Any, args: tuple, kwargs: dict) -> tuple[list[AttentionCall] | None, str]:
    """The base's attention calls from one forward: on its own device (meta included), else on a CPU copy with
    arbitrary values (the calls' head dims and scales do not depend on them). None, and why, when it cannot run."""
    if not isinstance(base, nn.Module):
        return None, "the base is a shapes file or mapping, which cannot run a forward"
    reason = ""
    for attempt in ("own", "cpu"):
        try:
            runner = base if attempt == "own" else arbitrary_cpu_copy(base)
            recorder = AttentionRecorder()
            run_probe(runner, forward_of(runner, args, kwargs), [recorder])
            return recorder.calls, ""
        except Exception as err:  # an op without a meta kernel, data-dependent control flow, ...
            log.info("could not run the base (%s) to read its attention calls: %s", attempt, err)
            reason = (f"the base could not run a forward on the example inputs ({type(err).__name__}: "
                      f"{str(err)[:160]}); inputs must have no width dim (token ids, images, features)")
            if attempt == "own" and not is_meta(base):
                break
    return None, reason


def _attention_records(root: nn.Module, plan: Plan, ctx: Context, measured: Measured, args: tuple,
                       kwargs: dict) -> list[float]:
    """Decide the attention records (appended to the plan) and return each call's target scale; refuses what
    cannot be reached."""
    calls = measured.calls
    if not calls:
        if plan.multipliers["attn"] != 1.0:
            raise AttentionError(
                f"multipliers['attn']={plan.multipliers['attn']:g} is set but the probe forward found no attention "
                "call (no scaled_dot_product_attention, no softmax of q.k^T), so it would change nothing: leave "
                "'attn' out (in a search: ~sweep.space.attn)")
        return []
    width_attention = ctx.rules.width_attention
    base_calls, why = _base_calls(ctx.base, args, kwargs) if width_attention else (None, "")
    if width_attention and base_calls is None and ctx.base_head_dim is not None:
        # no runnable base: the user's base_head_dim with the usual 1/sqrt(d) at the base
        base_calls = [AttentionCall(c.kind, c.module, ctx.base_head_dim, ctx.base_head_dim**-0.5) for c in calls]
    named = ctx.attention
    native = {n for n, m in root.named_modules() if isinstance(m, hnn.SelfAttention)}
    foreign = [c for c in calls if not inside(c.module, native)] if native else calls
    sites, notes = find_scale_sites(root, forward_of(root, args, kwargs), calls, named) if foreign or named else ({}, [])
    decision = decide_attention(calls, base_calls, sites, width_attention=width_attention,
                                attn=plan.multipliers["attn"], scheme=plan.scheme, native=native, site_notes=notes,
                                base_failure=why)
    if named:
        for module, attributes in named.items():
            for attribute in attributes:
                if not any(s.module == module and s.attribute == attribute for s in sites.values()):
                    decision.problems.append(
                        f"attention={{...: {attribute!r}}}: changing {module or '<root>'}.{attribute} did not change "
                        "the scale of any attention call, so it is not the logit scale")
    if decision.problems:
        raise AttentionError("; ".join(decision.problems[:3]) + (
            f" (and {len(decision.problems) - 3} more)" if len(decision.problems) > 3 else ""))
    plan.modules += decision.records
    if plan.base_head_dim is None:
        plan.base_head_dim = decision.base_head_dim
    return decision.targets


def _named_attention(root: nn.Module, attention: Mapping[str, str] | None) -> dict[str, list[str]] | None:
    """``attention={glob: attribute}`` as {module name: attributes}, each module checked to have the attribute."""
    if not attention:
        return None
    modules = dict(root.named_modules())
    named: dict[str, list[str]] = {}
    for glob, attribute in attention.items():
        hits = [n for n in modules if match_any(n, [glob])] if glob else [""]
        if not hits:
            raise AttentionError(f"attention glob {glob!r} matched no module; module names look like "
                                 f"{', '.join([n for n in modules if n][:8])}")
        for hit in hits:
            value = getattr(modules[hit], attribute, "missing")
            if value == "missing" or not (value is None or (isinstance(value, (int, float))
                                                            and not isinstance(value, bool))):
                raise AttentionError(
                    f"attention={{{glob!r}: {attribute!r}}}: module {hit!r} has no attribute {attribute!r} holding a "
                    "number (it must hold the factor its forward multiplies q @ k^T by, or passes as scale=)")
            named.setdefault(hit, []).append(attribute)
    return named


def _native_records(root: nn.Module, plan: Plan, ctx: Context) -> None:
    for name, layer in root.named_modules():
        if not isinstance(layer, hnn.SelfAttention):
            continue
        base_dim = plan.base_head_dim
        if base_dim is None:
            proj, split = ("qkv", 3) if layer.fused_qkv else ("q", 1)
            base_name = ctx.matcher.base_name(f"{name}.{proj}.weight")
            if base_name is not None and ctx.shapes.shapes[base_name][0] is not None:
                base_dim = int(ctx.shapes.shapes[base_name][0]) // (split * layer.n_head)
        factor = native_factor(plan.multipliers["attn"], base_dim if ctx.rules.width_attention else None,
                               layer.head_dim)
        plan.modules.append(ModuleRecord(name, "native_attention", factor))


def _constant_records(plan: Plan, knowledge: Knowledge | None, root: nn.Module) -> None:
    if knowledge is None or not plan.scheme or plan.scheme == "sp":
        return
    modules = dict(root.named_modules())
    for constant in knowledge.constants:
        current = getattr(modules[constant.module], constant.attribute)
        current = float(current) if not isinstance(current, torch.Tensor) or not current.is_meta else math.nan
        factor = constant.base_value / current if current else 1.0
        plan.modules.append(ModuleRecord(constant.module, "constant", factor, constant.attribute,
                                         constant.base_value, constant.why))


def _check(root: nn.Module, plan: Plan, ctx: Context, args: tuple, kwargs: dict, targets: list[float]) -> None:
    """The safety net (hptransfer.check); refuses the model, undoing the install, on a deviation."""
    if not ctx.check:
        plan.check = {"ran": False, "summary": "skipped (check=False)"}
        return
    if plan.init == "keep" or not ctx.rules.rescale_init:
        reason = "init='keep' (trained weights are not compared with a fresh base)" if plan.init == "keep" else \
            f"scheme {plan.scheme!r} makes no prediction to check"
        plan.check = {"ran": False, "summary": f"not run: {reason}"}
        return
    if not isinstance(ctx.base, nn.Module):
        plan.check = {"ran": False, "summary": "not run: the base is a shapes file or mapping; pass the base as a "
                                               "model (a real one, or on the meta device) to run it"}
        return
    if all(r.shape == r.base_shape for r in plan.params.values()):
        plan.check = {"ran": False, "summary": "not run: the model has the base's shape (every factor is 1)"}
        return
    if any(type(p).__name__ == "DTensor" or type(getattr(p, "data", None)).__name__ == "DTensor"
           for p in root.parameters()):
        _not_run(plan, "the model is sharded (FSDP2) by its first forward; pass example_inputs= to parametrize, "
                       "before fully_shard, to run it")
        return
    started = time.perf_counter()
    drawn = iter(range(10**6))
    try:
        bases = base_with_values(ctx.base, lambda meta_base: _materialize(meta_base, root, plan, ctx, next(drawn)))
    except MaterializeError as err:
        _not_run(plan, f"{err}; pass a real base (build it on the CPU) to run it")
        return
    sigma = not isinstance(plan.init, str)
    if sigma or any(value != 1.0 for value in plan.multipliers.values()):
        # mu-P predicts the base *with the same tunable multipliers and init sigma*: give each draw its own plan at
        # its own shape (a sigma redraws it, on a forked RNG so the model's stream is unchanged)
        for index, draw in enumerate(bases):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(index)
                parametrize(draw, draw, plan.scheme if plan.scheme in SCHEMES else ctx.rules, delta=root,
                            multipliers=plan.multipliers, init=plan.init if sigma else "keep", check=False,
                            example_inputs=Inputs(args, kwargs), **ctx.call)
    report = run_check(root, bases, plan, args, kwargs, targets)
    report.seconds = time.perf_counter() - started  # the base's draws included
    plan.check = report.to_dict()
    if report.deviations:
        message = refusal(report, plan)
        _undo(root, ctx)
        raise CheckError(message)


def _not_run(plan: Plan, reason: str) -> None:
    """The safety net could not run: the plan says why, and so does the log (it was not skipped on purpose)."""
    plan.check = {"ran": False, "summary": f"not run: {reason}"}
    log.warning("hptransfer's safety net did not run: %s", reason)


def _real_base(base: Any, knowledge: Knowledge | None, rules: Scheme, init: str | float) -> Any:
    """The base with values: itself, or for a meta base the adapter's rebuild from the family's config (its init
    is then measured, not assumed), when the scheme rescales the init."""
    if (isinstance(base, nn.Module) and is_meta(base) and knowledge is not None and knowledge.rebuild_base is not None
            and rules.rescale_init and init == "rescale"):
        try:
            return knowledge.rebuild_base()
        except Exception as err:  # a config the family cannot build on the CPU: fall back to its init law
            log.info("could not rebuild the base from its config: %s", err)
    return base


def _materialize(base: nn.Module, root: nn.Module, plan: Plan, ctx: Context, draw: int) -> nn.Module | None:
    """Draw ``draw`` of a meta base with values: the adapter's rebuild (one draw), or the base drawn at the plan's
    base stds (None once there are enough)."""
    if ctx.rebuilt is not None or (ctx.knowledge is not None and ctx.knowledge.rebuild_base is not None):
        if draw:
            return None
        return ctx.rebuilt if ctx.rebuilt is not None else ctx.knowledge.rebuild_base()
    if ctx.value_stats is None:
        ctx.value_stats = value_stats(root)
    stds = {name: rec.base_std for name, rec in plan.params.items()}
    return materialize_base(base, root, stds, ctx.matcher.measurable, ctx.value_stats)


def _undo(root: nn.Module, ctx: Context) -> None:
    """Remove the install and divide the init's factors back out (the weights return to within rounding)."""
    params = dict(root.named_parameters())
    with torch.no_grad():
        for name, ratio in ctx.ratios.items():
            if ratio:
                params[name].div_(ratio)
    unparametrize(root)


def _finish(root: nn.Module, plan: Plan, ctx: Context, inputs: tuple[tuple, dict], measured: Measured | None) -> None:
    """The stages that need a forward: the measured layout against the plan, attention, and the check."""
    args, kwargs = inputs
    if measured is None:
        measured = _measure(root, args, kwargs, attention=True)
        _confirm_layout(root, plan, ctx, measured)
    targets = []
    if _needs_attention(ctx, plan):
        before = len(plan.modules)
        targets = _attention_records(root, plan, ctx, measured, args, kwargs)
        add_attention(root, plan.modules[before:])
    _check(root, plan, ctx, args, kwargs, targets)


def _needs_attention(ctx: Context, plan: Plan) -> bool:
    return ctx.rules.width_attention or plan.multipliers["attn"] != 1.0


def _confirm_layout(root: nn.Module, plan: Plan, ctx: Context, measured: Measured) -> None:
    """A plan made without a probe read layouts from module classes; the first forward measures them and
    refuses the model where a measured role differs from the assumed one."""
    assumed, _ = collect_views(root, ctx.shapes, ctx.matcher, None)
    found, _ = collect_views(root, ctx.shapes, ctx.matcher, measured.layout)
    roles = {v.name: v.role for vs in assumed.values() for v in vs}
    wrong = [f"{v.name} (assumed {roles[v.name]}, measured {v.role})" for vs in found.values() for v in vs
             if v.measured and roles.get(v.name) not in (None, v.role)]
    if wrong:
        raise BaseShapeError(
            f"the first forward shows parameters used in another role than the plan assumed from their modules: "
            f"{', '.join(wrong[:4])}. Pass example_inputs= to parametrize so their use is measured before the "
            "plan is made.")


class _FirstForward:
    """Root pre-hook: runs the stages that need a forward on the model's first call, then removes itself."""

    def __init__(self, plan: Plan, ctx: Context) -> None:
        self.plan, self.ctx = plan, ctx
        self.handle: Any = None
        self.running = False

    @torch._dynamo.disable
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.running or self.handle is None:
            return None
        self.running = True
        try:
            _finish(module, self.plan, self.ctx, small_batch(args, kwargs, PROBE_BATCH), None)
        finally:
            self.running = False
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        return None


def pending_first_forward(root: nn.Module) -> bool:
    """Whether parametrize left its measured stages for the model's first forward (no example inputs)."""
    return any(isinstance(hook, _FirstForward) for hook in root._forward_pre_hooks.values())


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
    check: bool = True,
) -> Plan:
    """Parametrize ``model`` in place under ``scheme`` relative to ``base`` and return its Plan.

    Args:
        model: the target module, already built (any device).
        base: the base/proxy shapes: an nn.Module (meta device is fine; a real one lets the safety net run on
            any model), a {name: shape} mapping, or a path to a shapes file (hptransfer JSON, mup .bsh).
        scheme: "sp", "mup", "depth_mup" (alpha 1/2), "completep" (alpha 1), or a rules.Scheme.
        readout: glob(s) of the output layer(s) that take the tunable output multiplier. Every layer that maps
            a width dim to a fixed one is a readout under mu-P (an MoE router too) and is found by itself.
        branches: glob(s) of residual-branch modules (their output is added to the residual stream).
            Needed by depth schemes unless the model uses hptransfer.nn.Residual or an adapter knows them.
        base_head_dim: the base's head dim, needed only when the base cannot run a forward.
        multipliers: tunable width/depth-independent constants "output", "input", "attn", "branch" (default 1).
        init: "rescale" (init std follows the rule relative to the base), "keep" (e.g. pretrained weights),
            or a float sigma (redraw every weight with std sigma x the rule's factor).
        delta: optional second model/shapes at another width: dims that differ between base and delta are
            width dims even where the model has the base's size.
        adapter: "auto" (by the model's class, see hptransfer.adapters), an adapter name or object, or None.
        attention: {module glob: attribute} naming where an attention's logit scale lives when it is not an
            attribute of the module that runs the call; it is checked by changing it (probe.scale_sites).
        example_inputs: inputs for the probe forward (a tensor, a tuple of positional args or a dict of keyword
            args). Without them (and without an adapter that makes some) the measured stages run on the model's
            first forward, on the first two samples of its batch.
        check: run the measured safety net (hptransfer.check) and refuse a model that deviates from mu-P.

    Returns:
        The Plan; the model remembers it (``hptransfer.get_plan(model)``).

    Raises:
        AttentionError: attention whose logit scale must change but cannot be reached.
        InitError: with a meta base, a custom init whose width law is ambiguous (pass a real base or a sigma).
        CheckError: the parametrized model does not do at init what mu-P predicts (the message says where).
    """
    root = unwrap(model)
    if getattr(root, PLAN_ATTR, None) is not None:
        raise AlreadyParametrizedError(
            "this model is already parametrized (it carries a Plan); build a fresh model, or call "
            "hptransfer.unparametrize(model) first")
    rules = get_scheme(scheme)
    if not (init in ("rescale", "keep") or (isinstance(init, (int, float)) and not isinstance(init, bool)
                                            and math.isfinite(init) and init > 0)):
        raise SchemeError(f"init={init!r}: use 'rescale', 'keep' or a positive float sigma")
    if init == "rescale" and rules.rescale_init and any(p.is_meta for p in root.parameters()):
        raise InitError("the model is on the meta device: init='rescale' measures and rescales its weights, and a "
                        "meta tensor has none. Build the model on a real device (or materialize it first), or pass "
                        "init='keep' (the weights are drawn later) or init=<sigma>")
    if base_head_dim is not None:
        number("base_head_dim", base_head_dim, minimum=1, integer=True,
               fix="the head dim of the base's attention (its q/k size per head), or leave it out with a real base")
    named_attention = _named_attention(root, attention)
    shapes = load_base(base, delta)  # read the base (and any file) once
    found = find_adapter(root, adapter)
    knowledge = found.describe(root, base, shapes) if found is not None else None
    if example_inputs is None and knowledge is not None and knowledge.example_inputs is not None:
        example_inputs = knowledge.example_inputs()
    inputs = as_args(example_inputs) if example_inputs is not None else None
    try:
        measured = _measure(root, *inputs, attention=True) if inputs is not None else None
    except HptError:
        raise
    except Exception as err:  # the user's inputs do not fit the model: say so before anything changed
        raise ArgumentError(f"example_inputs: the model's forward failed on them ({type(err).__name__}: "
                            f"{(str(err).splitlines() or [''])[0][:160]}); pass inputs its forward takes (a tensor, a "
                            "tuple of positional args or a dict of keyword args), or leave them out") from err
    matcher = Matcher.build(root, shapes, base if isinstance(base, nn.Module) else None)
    structure = read_structure(
        root, shapes, matcher, layout=measured.layout if measured else None,
        readout=as_globs(readout) or (knowledge.readout if knowledge else []),
        branches=as_globs(branches) or ((knowledge.branches or []) if knowledge else []),
        inputs=knowledge.inputs if knowledge else (), order=measured.order if measured else (),
        adapter=knowledge.adapter if knowledge else "", input_std=knowledge.input_std if knowledge else None,
        branch_note=knowledge.branch_note if knowledge else "")
    plan = decide(structure, rules, multipliers, init, base_head_dim)
    ctx = Context(base, shapes, matcher, rules, knowledge, named_attention, check, base_head_dim,
                  call={"readout": readout, "branches": branches, "adapter": adapter, "attention": attention})
    targets: list[float] = []
    if measured is not None and _needs_attention(ctx, plan):
        targets = _attention_records(root, plan, ctx, measured, *inputs)
    _native_records(root, plan, ctx)
    _constant_records(plan, knowledge, root)
    real_base = _real_base(base, knowledge, rules, init)
    ctx.rebuilt = real_base if real_base is not base else None
    ctx.ratios = initialize(root, plan, real_base if isinstance(real_base, nn.Module) else None, matcher.measurable, knowledge.init if knowledge else None,
                            rules.rescale_init)
    deferred = inputs is None
    hook = _FirstForward(plan, ctx)
    if deferred:  # registered before install's hooks, so it runs first on the first forward
        hook.handle = root.register_forward_pre_hook(hook, with_kwargs=True)
    install(root, plan, attention_pending=deferred and _needs_attention(ctx, plan))
    setattr(root, PLAN_ATTR, plan)
    setattr(root, STATE_ATTR, ctx)
    if deferred:
        getattr(root, HOOKS_ATTR).append(hook.handle)
    else:
        _check(root, plan, ctx, *inputs, targets)
    return plan


def unparametrize(model: nn.Module) -> None:
    """Remove forward multipliers, attention scales, constants and the Plan (weights keep their values)."""
    root = unwrap(model)
    uninstall(root)
    for attr in (PLAN_ATTR, STATE_ATTR):
        if hasattr(root, attr):
            delattr(root, attr)
