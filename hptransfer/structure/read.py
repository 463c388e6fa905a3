"""Reading a model's structure: base matching, every parameter's role, readouts, inputs and branches.

Pure: it reads the model, its base's shapes, the probe's measured uses and an adapter's knowledge, and returns a
ModelStructure for hptransfer.decide. Nothing here changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from ..errors import ReadoutError
from ..probe.layout import Use
from .match import Matcher
from .roles import View, collect_views, count_base_branches, find_branches, find_readouts, foreign_readout_uses
from .shapes import BaseShapes


@dataclass
class ModelStructure:
    """What hptransfer.structure read from one model (every name is a module or parameter name of the model).

    Attributes:
        views: per tensor (by id), every name it is used under with its role; canonical: each tensor's name.
        readouts: every module that maps a width dim to a fixed one; primary: those taking the output multiplier.
        inputs: input-layer modules. branches: residual-branch modules; base_branches: their count in the base.
        matched_by_role: parameters of added blocks matched to a base parameter of another name.
        adapter: the adapter that supplied knowledge (""); input_std: its embedding init std, if known.
    """

    views: dict[int, list[View]]
    canonical: dict[int, str]
    readouts: list[str]
    primary: list[str]
    inputs: list[str]
    branches: list[str]
    base_branches: int
    matched_by_role: dict[str, str] = field(default_factory=dict)
    adapter: str = ""
    input_std: float | None = None
    branch_note: str = ""



def read_structure(root: nn.Module, shapes: BaseShapes, matcher: Matcher, *, layout: dict[str, list[Use]] | None,
                   readout: list[str], branches: list[str], inputs: Sequence[str] = (), order: Sequence[str] = (),
                   adapter: str = "", input_std: float | None = None, branch_note: str = "") -> ModelStructure:
    """The structure of ``root`` relative to its base (see ModelStructure).

    Args:
        layout: each parameter's measured uses (hptransfer.probe.layout), None without a probe forward.
        readout, branches: globs (the user's, else an adapter's). inputs: input modules an adapter names.
        order: module names in the order the probe forward ran them (picks the primary readout).
    """
    views, canonical = collect_views(root, shapes, matcher, layout)
    foreign = foreign_readout_uses(views, canonical, layout, shapes)
    if foreign:
        raise ReadoutError(
            f"{'; '.join(foreign[:3])}: hptransfer puts a readout's 1/width multiplier on the input of the module "
            "that owns the product, and there it would scale the whole forward's input. Give the readout a module "
            "of its own (an nn.Linear whose weight is tied to the embedding: head.weight = embedding.weight, or "
            "hptransfer.nn.TiedReadout) and call it in the forward.")
    readouts, primary = find_readouts(root, views, readout, order)
    branch_names = find_branches(root, branches)
    base_branches = count_base_branches(branch_names, shapes) if branch_names else 0
    return ModelStructure(views, canonical, readouts, primary, list(inputs), branch_names, base_branches,
                          {**matcher.by_role, **{n: f"(none: its sizes at the base's width, {shape})"
                                                 for n, shape in matcher.by_sizes.items()}},
                          adapter, input_std, branch_note)
