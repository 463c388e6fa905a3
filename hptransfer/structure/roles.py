"""Which role each parameter plays, which modules are readouts, inputs and residual branches.

A role follows from which of a parameter's dims are width dims (they differ from the base) and which dims its
use contracts. The use is measured where a probe forward ran (hptransfer.probe.layout); otherwise it is read
from the module that owns the parameter: ``nn.Embedding`` (and subclasses) and transformers' ``Conv1D`` store
(in, out), transposed convolutions (in, out, ...), ``nn.Linear`` and convolutions (out, in, ...), a 3-d
parameter of any other module a stack of (out, in) matrices (fused MoE experts), and a parameter of any other
module with one width dim and no product is a vector (class tokens, position embeddings). Pure functions: nothing
here changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from .. import nn as hnn
from ..errors import BaseShapeError, BranchError, ReadoutError
from ..probe.layout import Use
from .match import Matcher
from .shapes import BaseShapes, index_pattern, match_any, resolve_dims

READOUT_CLASSES = (hnn.Readout, hnn.TiedReadout)
IN_OUT_CLASS_NAMES = ("Conv1D",)  # transformers' GPT-2 layer: weight (in, out)


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
    fan_dims: tuple[int | None, int | None] | None = None  # (fan-in dim, fan-out dim) of a matrix
    stacked: tuple[int, ...] = ()  # dims that index separate matrices (fused experts)
    measured: bool = False  # the role came from a probe forward's uses, not from the owner's class


@dataclass(frozen=True)
class Role:
    """A parameter view's role, its fan multipliers and dims, and whether its use was measured."""

    role: str
    fan_in_mult: float = 1.0
    fan_out_mult: float = 1.0
    fan_dims: tuple[int | None, int | None] | None = None
    stacked: tuple[int, ...] = ()
    measured: bool = False


def owner_of(name: str) -> tuple[str, str]:
    owner, _, leaf = name.rpartition(".")
    return owner, leaf


def class_fan_axes(module: nn.Module, ndim: int) -> tuple[int, int] | None:
    """(fan_out axis, fan_in axis) of a >= 2-d weight from its owner's class; None: not a matrix by class."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or type(module).__name__ in IN_OUT_CLASS_NAMES:
        return 1, 0
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1, 0
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear, hnn.TiedReadout)):
        return 0, 1
    return None


def generic_fan_axes(ndim: int) -> tuple[int, int] | None:
    """(fan_out axis, fan_in axis) of a parameter of any other module: (out, in) for a matrix, a stack of (out, in)
    matrices for a 3-d tensor (fused MoE experts (E, out, in))."""
    return {2: (0, 1), 3: (1, 2)}.get(ndim)


def _role(width: tuple[bool, ...], mults: list[float], fan_out: int | None, fan_in: int | None, name: str,
          shape: tuple[int, ...], how: str, measured: bool = False) -> Role:
    extra = [i for i, w in enumerate(width) if w and i not in (fan_in, fan_out)]
    if extra:
        raise BaseShapeError(
            f"parameter {name!r} {shape} changes size in dims {extra} besides its fan-in (dim {fan_in}) and fan-out "
            f"(dim {fan_out}) ({how}); mu-P has no rule for a width dim that is neither. Keep those dims the same "
            "size in the base and the model (e.g. the number of experts, a kernel size).")
    w_in = fan_in is not None and width[fan_in]
    w_out = fan_out is not None and width[fan_out]
    fi = mults[fan_in] if fan_in is not None else 1.0
    fo = mults[fan_out] if fan_out is not None else 1.0
    # dims before the fan dims index separate matrices (experts); dims after them are a kernel (receptive field)
    fan = [d for d in (fan_in, fan_out) if d is not None]
    stacked = tuple(range(min(fan))) if fan else ()
    role = "hidden" if w_in and w_out else "input" if w_out else "output" if w_in else "scalar"
    if role == "scalar":
        return Role("scalar", measured=measured)
    return Role(role, fi, fo, (fan_in, fan_out), stacked, measured)


def classify(module: nn.Module, shape: tuple[int, ...], base_shape: tuple[int, ...], width: tuple[bool, ...],
             name: str, uses: Sequence[Use] = ()) -> Role:
    """Role, fan multipliers and fan dims of one parameter view (measured from ``uses`` where it has a product)."""
    mults = [s / b if w else 1.0 for s, b, w in zip(shape, base_shape, width)]
    products = [u for u in uses if u.kind in ("matmul", "lookup")]
    if products:
        use = products[0]
        return _role(width, mults, use.fan_out, use.fan_in, name, shape, f"measured: its use in "
                     f"{use.module or 'the root'} contracts dim {use.fan_in}", measured=True)
    if len(shape) == 0 or not any(width):
        return Role("scalar", measured=bool(uses))
    if len(shape) == 1:
        return Role("vector", 1.0, mults[0], measured=bool(uses))
    axes = None if uses else class_fan_axes(module, len(shape))
    if axes is None and sum(width) == 1 and (uses or len(shape) > 2):
        # a class token (1, 1, D), a position embedding (1, N, D), a gain: one width dim and no product
        return Role("vector", 1.0, mults[width.index(True)], measured=bool(uses))
    if axes is None and not uses:
        axes = generic_fan_axes(len(shape))
    if axes is None:
        raise BaseShapeError(
            f"parameter {name!r} {shape} has {sum(width)} width dims, and neither a product in the probe forward nor "
            f"its module ({type(module).__name__}) says which is its fan-in. Pass example_inputs= to parametrize so "
            "its use can be measured.")
    out_axis, in_axis = axes
    return _role(width, mults, out_axis, in_axis, name, shape, f"by its module {type(module).__name__}")


def _uses_in(uses: Sequence[Use], owner: str) -> list[Use]:
    """The uses that ran inside ``owner`` (or in a module nested in it)."""
    return [u for u in uses if owner == "" or u.module == owner or u.module.startswith(owner + ".")]


def collect_views(root: nn.Module, base: BaseShapes, matcher: Matcher,
                  layout: dict[str, list[Use]] | None = None) -> tuple[dict[int, list[View]], dict[int, str]]:
    """Every (aliased) use of every parameter, grouped by tensor; and each tensor's canonical name."""
    modules = dict(root.named_modules())
    canonical = {id(p): n for n, p in root.named_parameters()}
    views: dict[int, list[View]] = {}
    missing: list[str] = []
    unmatched: list[BaseShapeError] = []
    for name, param in root.named_parameters(remove_duplicate=False):
        try:
            base_name = matcher.base_name(name)
            if base_name is None and name != canonical[id(param)]:
                base_name = matcher.base_name(canonical[id(param)])
        except BaseShapeError as err:  # an added block's layer with no base layer of its kind
            unmatched.append(err)
            continue
        if base_name is None:
            missing.append(name)
            continue
        owner, leaf = owner_of(name)
        shape = tuple(param.shape)
        if name in matcher.by_sizes:  # matched by its sizes only: the base shape is the size map's
            base_shape = matcher.by_sizes[name]
            width = tuple(s != b for s, b in zip(shape, base_shape))
        else:
            base_shape, width = resolve_dims(name, shape, base_name, base)
        uses = _uses_in((layout or {}).get(canonical[id(param)], []), owner)
        role = classify(modules[owner], shape, base_shape, width, name, uses)
        views.setdefault(id(param), []).append(
            View(name, owner, leaf, shape, base_name, base_shape, width, role.role, role.fan_in_mult,
                 role.fan_out_mult, role.fan_dims, role.stacked, role.measured))
    if missing:
        sample = ", ".join(sorted(base.shapes)[:6])
        raise BaseShapeError(
            f"{len(missing)} model parameter(s) have no counterpart in the base, even with block indices "
            f"ignored: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Base names look like: "
            f"{sample}. Build the base from the same model class (only widths/depth may differ).")
    if unmatched:
        raise unmatched[0]
    return views, canonical


def foreign_readout_uses(views: dict[int, list[View]], canonical: dict[int, str],
                         layout: dict[str, list[Use]] | None, base: BaseShapes) -> list[str]:
    """Readout uses of a tensor outside every module that owns it (``x @ self.wte.weight.T`` in a parent's
    forward): hptransfer cannot put the readout's multiplier there. One line per such use."""
    problems = []
    for tensor_id, tensor_views in views.items():
        uses = (layout or {}).get(canonical[tensor_id], [])
        owners = {v.owner for v in tensor_views}
        view = tensor_views[0]
        for use in uses:
            if use.kind != "matmul" or any(_uses_in([use], o) for o in owners):
                continue
            role = _role(view.width, [1.0] * len(view.width), use.fan_out, use.fan_in, view.name, view.shape,
                         "measured")
            if role.role == "output":
                problems.append(f"{view.name} is used as a readout (a product over its width dim) inside "
                                f"{use.module or 'the root module'}'s own forward")
    return problems


def find_readouts(root: nn.Module, views: dict[int, list[View]], readout_globs: list[str],
                  order: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(every readout module, the primary ones that take the tunable output multiplier).

    Every layer that maps a width dim to a fixed one is a readout (the language-model head, a classifier, an MoE
    router): mu-P gives each the output rule. The primary readouts are those named (``readout=`` globs, an
    adapter, hptransfer.nn.Readout); otherwise the output layer that runs last (``order``: the probe's module
    order) or is registered last.
    """
    modules = dict(root.named_modules())
    outputs = [n for n in modules if any(v.owner == n and v.role == "output" and v.leaf == "weight"
                                         for vs in views.values() for v in vs)]
    named = [n for n, m in modules.items() if isinstance(m, READOUT_CLASSES)]
    if readout_globs:
        chosen = [n for n in modules if n and match_any(n, readout_globs)]
        if not chosen:
            raise ReadoutError(f"readout={readout_globs} matched no module; module names look like "
                               f"{', '.join([n for n in modules if n][:8])}")
        for name in chosen:
            roles = {v.role for vs in views.values() for v in vs if v.owner == name and v.leaf == "weight"}
            if roles and "output" not in roles and roles != {"scalar"}:  # (no width dim: nothing to tell)
                raise ReadoutError(
                    f"readout module {name!r} does not map a width dim to a fixed one (its weight is {sorted(roles)}); "
                    "a readout's multiplier scales its input, which for this module "
                    f"{'are token ids' if isinstance(modules[name], nn.Embedding) else 'is not the last hidden state'}. "
                    "Name the module that produces the logits (readout=...), or leave readout= out: every "
                    "width-to-fixed layer is found by itself.")
        named += chosen
    readouts = [n for n in modules if n in set(outputs) | set(named)]
    primary = [n for n in readouts if n in named]
    if not primary and outputs:
        ranked = [n for n in order if n in outputs] or outputs
        primary = [ranked[-1]]
    return readouts, primary


def find_branches(root: nn.Module, branch_globs: list[str]) -> list[str]:
    """Names of residual-branch modules: glob matches plus every hptransfer.nn.Residual."""
    modules = dict(root.named_modules())
    found = []
    for glob in branch_globs:
        hits = [n for n in modules if n and match_any(n, [glob])]
        if not hits:
            raise BranchError(
                f"branches glob {glob!r} matched no module ('*' stays within one dotted name component, "
                f"'**' crosses them); module names look like {', '.join([n for n in modules if n][:8])}")
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
