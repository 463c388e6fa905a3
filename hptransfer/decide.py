"""The Plan from a model's structure and a scheme's rules: every parameter's factors, every module's multiplier.

Reads only: the views (roles, fan multipliers) from hptransfer.structure, the readouts and branches, and the
scheme's tables (hptransfer.rules). Nothing here changes the model; parametrize() installs what this decides.
"""

from __future__ import annotations

import math
from typing import Mapping

from .errors import BranchError, ReadoutError, SchemeError
from .plan import ModuleRecord, ParamRecord, Plan
from .rules import OPTIMIZER_FAMILIES, Scheme
from .structure.read import ModelStructure
from .structure.roles import View, block_of

MULTIPLIER_NAMES = ("output", "input", "attn", "branch")
# Embedding rms advised for depth transfer at alpha > 1/2: measured on HF Llama (depths 2..16, CompleteP),
# 0.02 x 20 = 0.4 passes the depth check where 0.02 fails.
DEPTH_EMBEDDING_RMS = 0.4


def check_multipliers(multipliers: Mapping[str, float] | None) -> dict[str, float]:
    merged = {name: 1.0 for name in MULTIPLIER_NAMES}
    for key, value in (multipliers or {}).items():
        if key not in merged:
            raise SchemeError(f"unknown multiplier {key!r}; the tunable ones are {list(MULTIPLIER_NAMES)}")
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and value > 0):
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


def decide(structure: ModelStructure, rules: Scheme, multipliers: Mapping[str, float] | None,
           init: str | float, base_head_dim: int | None = None) -> Plan:
    """Every factor for the model relative to its base under ``rules`` (see parametrize)."""
    mults = check_multipliers(multipliers)
    views = structure.views
    branch_names = structure.branches
    if rules.uses_depth and not branch_names:
        if structure.branch_note:
            raise BranchError(f"scheme {rules.name!r} scales residual branches with depth, and {structure.adapter} "
                              f"has none: {structure.branch_note}")
        raise BranchError(
            f"scheme {rules.name!r} scales residual branches with depth but none were found: pass "
            "branches=['blocks.*.attn', 'blocks.*.mlp'] (globs of the modules whose outputs are added to the "
            "residual stream) or build the blocks with hptransfer.nn.Residual")
    if branch_names and structure.base_branches == 0:
        raise BranchError(f"the base has no modules matching the branches {branch_names[:4]}; "
                          "is the base built from the same model class?")
    depth_mult = len(branch_names) / structure.base_branches if branch_names else 1.0
    blocks = {block_of(b) for b in branch_names}
    readouts = set(structure.readouts)
    readout_views = [v for vs in views.values() for v in vs if v.owner in readouts and v.leaf == "weight"]
    primary_views = [v for v in readout_views if v.owner in structure.primary] or readout_views
    hidden_fan_in = [v.fan_in_mult for vs in views.values() for v in vs if v.role == "hidden"]
    width_mult = primary_views[0].fan_in_mult if primary_views else max(hidden_fan_in, default=1.0)
    input_modules = sorted({v.owner for vs in views.values() for v in vs if v.role == "input"}
                           | set(structure.inputs))
    if mults["output"] != 1.0 and not readouts:
        raise ReadoutError("multipliers['output'] is set but no readout was found: name it with readout=..."
                           " or pass delta= (a model at another width) so width dims are known")
    if mults["input"] != 1.0 and not input_modules:
        raise ReadoutError("multipliers['input'] is set but no input layer was found: pass delta= (a model "
                           "at another width) so hptransfer can tell which dims are width")

    plan = Plan(scheme=rules.name, depth_alpha=rules.depth_alpha, width_mult=width_mult,
                depth_mult=depth_mult, n_branches=len(branch_names), base_branches=structure.base_branches,
                multipliers=mults, base_head_dim=base_head_dim, init=init, adapter=structure.adapter or None)
    for tensor_id, tensor_views in views.items():
        name = structure.canonical[tensor_id]
        view, role = _canonical_view(tensor_views, name, readouts)
        block = next((b for b in blocks if name.startswith(b + ".")), None)
        m_l = depth_mult if block else 1.0
        rule = rules.width[role]
        fi, fo = view.fan_in_mult, view.fan_out_mult
        lr = {family_name: family.lr(rule, fi, fo) * rules.depth_factor(family.depth_lr, m_l)
              for family_name, family in OPTIMIZER_FAMILIES.items()}
        # PyTorch couples decay to lr (p -= lr * wd * p): keep lr * wd width-invariant (mup MuAdamW, CompleteP).
        wd = {family_name: 1.0 / family.lr(rule, fi, fo) for family_name, family in OPTIMIZER_FAMILIES.items()}
        eps = (1.0 / width_mult if rules.scale_eps else 1.0) * rules.depth_factor("eps", m_l)
        multiplier = rule.multiplier(fi, fo) * mults["output"] if role == "output" else (
            mults["input"] if role == "input" else 1.0)
        plan.params[name] = ParamRecord(
            name=name, shape=view.shape, base_shape=view.base_shape, role=role, block=block,
            fan_in_mult=fi, fan_out_mult=fo, depth_mult=m_l, init_std=rule.init_std(fi, fo),
            multiplier=multiplier, lr=lr, weight_decay=wd, eps=eps,
            aliases=[v.name for v in tensor_views if v.name != name], fan_dims=view.fan_dims,
            stacked_dims=view.stacked, matched=structure.matched_by_role.get(name), measured=view.measured)

    if rules.depth_alpha is not None and depth_mult != 1.0:
        plan.notes.append("in-block LR factors beyond Adam and SGD: Muon's hidden matrices get none (no depth rule "
                          "is published for it); Lion and Adafactor get Adam's by analogy (unverified)")
    for name in structure.readouts:
        view = next((v for v in readout_views if v.owner == name), None)
        fan_in = view.fan_in_mult if view else 1.0
        factor = rules.width["output"].multiplier(fan_in, 1.0)
        if name in structure.primary or not structure.primary:
            factor *= mults["output"]
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
