"""Which role each parameter plays, which modules are readouts, inputs and residual branches.

Pure functions that read a model and its base shapes; nothing here changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import nn as hnn
from .errors import BaseShapeError, BranchError, ReadoutError
from .shapes import BaseShapes, index_pattern, match_any, match_base_name, resolve_dims

# Layers whose weight is stored (fan_in, fan_out) rather than torch.nn.Linear's (fan_out, fan_in).
IN_OUT_LAYOUT_CLASSES = ("Embedding", "EmbeddingBag", "Conv1D")
READOUT_CLASSES = (hnn.Readout, hnn.TiedReadout)


@dataclass
class View:
    """One name under which a tensor is used, with its owner module and width classification."""

    name: str
    owner: str
    leaf: str  # attribute name on the owner ("weight", "bias", ...)
    shape: tuple[int, ...]
    base_name: str
    base_shape: tuple[int, ...]
    width: tuple[bool, ...]
    role: str
    fan_in_mult: float
    fan_out_mult: float


def owner_of(name: str) -> tuple[str, str]:
    owner, _, leaf = name.rpartition(".")
    return owner, leaf


def fan_axes(module: nn.Module) -> tuple[int, int]:
    """(fan_out axis, fan_in axis) of a >= 2-d weight owned by ``module``."""
    if type(module).__name__ in IN_OUT_LAYOUT_CLASSES:
        return 1, 0
    return 0, 1


def classify(module: nn.Module, shape: tuple[int, ...], base_shape: tuple[int, ...],
             width: tuple[bool, ...], name: str) -> tuple[str, float, float]:
    """Role and (fan_in_mult, fan_out_mult) of a parameter from which of its dims are width dims."""
    mults = [s / b if w else 1.0 for s, b, w in zip(shape, base_shape, width)]
    if len(shape) == 0 or not any(width):
        return "scalar", 1.0, 1.0
    if len(shape) == 1:
        return "vector", 1.0, mults[0]
    out_axis, in_axis = fan_axes(module)
    extra = [i for i in range(len(shape)) if i not in (out_axis, in_axis) and width[i]]
    if extra:
        raise BaseShapeError(
            f"parameter {name!r} {shape} changes size in dims {extra} besides fan-in and fan-out; "
            "hptransfer supports width in at most the two fan dims (reshape it or keep those dims fixed)"
        )
    w_in, w_out = width[in_axis], width[out_axis]
    role = "hidden" if (w_in and w_out) else "input" if w_out else "output"
    return role, mults[in_axis], mults[out_axis]


def collect_views(root: nn.Module, base: BaseShapes) -> tuple[dict[int, list[View]], dict[int, str]]:
    """Every (aliased) use of every parameter, grouped by tensor; and each tensor's canonical name."""
    modules = dict(root.named_modules())
    canonical = {id(p): n for n, p in root.named_parameters()}
    views: dict[int, list[View]] = {}
    missing: list[str] = []
    for name, param in root.named_parameters(remove_duplicate=False):
        base_name = match_base_name(name, base)
        if base_name is None and name != canonical[id(param)]:
            base_name = match_base_name(canonical[id(param)], base)
        if base_name is None:
            missing.append(name)
            continue
        owner, leaf = owner_of(name)
        shape = tuple(param.shape)
        base_shape, width = resolve_dims(name, shape, base_name, base)
        role, fan_in, fan_out = classify(modules[owner], shape, base_shape, width, name)
        views.setdefault(id(param), []).append(
            View(name, owner, leaf, shape, base_name, base_shape, width, role, fan_in, fan_out))
    if missing:
        sample = ", ".join(sorted(base.shapes)[:6])
        raise BaseShapeError(
            f"{len(missing)} model parameter(s) have no counterpart in the base, even with block indices "
            f"ignored: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Base names look like: "
            f"{sample}. Build the base from the same model class (only widths/depth may differ)."
        )
    return views, canonical


def find_readouts(root: nn.Module, views: dict[int, list[View]], readout_globs: list[str]) -> list[str]:
    """Names of the readout modules; raises ReadoutError when ambiguous or when a glob matches nothing."""
    modules = dict(root.named_modules())
    candidates = sorted({v.owner for vs in views.values() for v in vs if v.role == "output"})
    if readout_globs:
        chosen = [n for n in modules if n and match_any(n, readout_globs)]
        if not chosen:
            raise ReadoutError(
                f"readout={readout_globs} matched no module; module names look like "
                f"{', '.join([n for n in modules if n][:8])}"
            )
    else:
        chosen = [n for n, m in modules.items() if isinstance(m, READOUT_CLASSES)]
        if not chosen and len(candidates) == 1:
            chosen = candidates
    stray = [c for c in candidates if c not in chosen]
    if stray:
        hint = "several layers" if not chosen else "layers besides the readout"
        raise ReadoutError(
            f"{hint} map a width dimension to a fixed one: {', '.join(stray + chosen)}. Name the output "
            "layer(s) with parametrize(..., readout=[...]) (every such layer must be a readout; e.g. an MoE "
            "router gate is one too), or keep the fixed dim's size equal in base and model"
        )
    return chosen


def find_branches(root: nn.Module, branch_globs: list[str]) -> list[str]:
    """Names of residual-branch modules: glob matches plus every hptransfer.nn.Residual."""
    modules = dict(root.named_modules())
    found = []
    for glob in branch_globs:
        hits = [n for n in modules if n and match_any(n, [glob])]
        if not hits:
            raise BranchError(
                f"branches glob {glob!r} matched no module ('*' stays within one dotted name component, "
                f"'**' crosses them); module names look like {', '.join([n for n in modules if n][:8])}"
            )
        found += hits
    found += [n for n, m in modules.items() if isinstance(m, hnn.Residual)]
    return sorted(set(found), key=list(modules).index)


def count_base_branches(branches: list[str], base: BaseShapes) -> int:
    """How many modules of the base correspond to the model's branches (indices treated as a pattern)."""
    patterns = {index_pattern(b) for b in branches}
    return sum(1 for m in base.modules if index_pattern(m) in patterns)


def block_of(branch: str) -> str:
    """The block a branch belongs to: its parent module (so pre-norms count), or itself at top level."""
    parent, _, _ = branch.rpartition(".")
    return parent or branch
