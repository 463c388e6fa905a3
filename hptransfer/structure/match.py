"""Which base parameter each model parameter corresponds to, by name where it exists and by role where not.

A model as deep as its base shares every parameter name with it. A deeper model has blocks the base lacks;
their parameters are matched to a base parameter of the same kind and the same fan pattern. Names alone get this
wrong in standard ResNets, whose first block of a stage downsamples: the conv1 of an added block reads the stage's
width, the base's block-0 conv1 the previous stage's. The match is checked against the *size map*: every size
of the model's parameters that share a name with the base, with the base size it stands for (128 -> 64 at twice
the width, 3 -> 3 for a kernel). A candidate whose sizes contradict the map is of another kind; then the closest
base parameter of the same module class, leaf name and non-width sizes is taken instead. Where none fits (a
Bottleneck's added block reduces from the stage's own expanded width, which no block 0 does), the base shape
follows from the size map alone when every size maps to one base size: the parameter is then matched by its
sizes only, and its base init std is inferred rather than measured. Otherwise the match fails and says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from torch import nn

from ..errors import BaseShapeError
from .shapes import BaseShapes, index_pattern


@dataclass
class Matcher:
    """Matches model parameter names to base parameter names (cached).

    Attributes:
        shapes: the base's shapes. classes: the base's module class per module name (empty for a shapes file).
        size_map: model size -> the base sizes it stands for, from the parameters matched by name.
        by_role: model names matched to a base parameter of another name, with that name (for the plan).
    """

    shapes: BaseShapes
    model_shapes: dict[str, tuple[int, ...]]
    model_classes: dict[str, str]
    classes: dict[str, str] = field(default_factory=dict)
    size_map: dict[int, set[int]] = field(default_factory=dict)
    by_role: dict[str, str] = field(default_factory=dict)
    by_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # virtual matches: their base shape
    _cache: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def build(cls, model: nn.Module, shapes: BaseShapes, base: nn.Module | None = None) -> "Matcher":
        model_shapes = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
        classes = {n: type(m).__name__ for n, m in base.named_modules()} if isinstance(base, nn.Module) else {}
        model_classes = {n: type(m).__name__ for n, m in model.named_modules()}
        size_map: dict[int, set[int]] = defaultdict(set)
        for name, shape in model_shapes.items():
            base_shape = shapes.shapes.get(name)
            if base_shape is None or len(base_shape) != len(shape):
                continue
            for size, base_size in zip(shape, base_shape):
                if base_size is not None:
                    size_map[size].add(int(base_size))
        return cls(shapes, model_shapes, model_classes, classes, dict(size_map))

    def base_name(self, name: str) -> str | None:
        """The base parameter matched to model parameter ``name`` (None: no counterpart at all). For a parameter
        matched by its sizes only, the closest parameter of its name pattern (whose values are not its base's)."""
        if name not in self._cache:
            self._cache[name] = self._match(name)
        return self._cache[name]

    def base_shape(self, name: str) -> tuple | None:
        """The base shape of model parameter ``name``: its matched parameter's, or the one the size map gives."""
        base_name = self.base_name(name)
        if name in self.by_sizes:
            return self.by_sizes[name]
        return None if base_name is None else self.shapes.shapes[base_name]

    def measurable(self, name: str) -> str | None:
        """The base parameter whose values stand for this one's at the base's width (None for a size match)."""
        base_name = self.base_name(name)
        return None if name in self.by_sizes else base_name

    def _consistent(self, shape: tuple[int, ...], base_shape: tuple) -> bool:
        if len(shape) != len(base_shape):
            return False
        for size, base_size in zip(shape, base_shape):
            allowed = self.size_map.get(size)
            if base_size is not None and allowed and int(base_size) not in allowed:
                return False
        return True

    def _match(self, name: str) -> str | None:
        shapes = self.shapes
        if name in shapes.shapes:
            return name
        candidates = shapes.by_pattern.get(index_pattern(name), [])
        if not candidates:
            return None
        shape = self.model_shapes.get(name)
        ordered = _by_closeness(name, candidates)
        if shape is None:
            return ordered[0]
        for other in ordered:
            if self._consistent(shape, shapes.shapes[other]):
                # a size that stands for two *width* sizes (two dims scaled differently) leaves the kind in doubt;
                # one that is also a fixed size (a vocabulary or context equal to a width) does not
                ambiguous = [size for size in shape if len(self.size_map.get(size, set()) - {size}) > 1]
                if ambiguous:
                    raise BaseShapeError(
                        f"parameter {name!r} {shape} belongs to a block the base does not have, and its size(s) "
                        f"{sorted(set(ambiguous))} stand for several base sizes "
                        f"({', '.join(f'{s} -> {sorted(self.size_map[s])}' for s in sorted(set(ambiguous)))}), so "
                        f"no base layer has its kind and fan pattern for certain ({other!r} {shapes.shapes[other]} "
                        "shares its name pattern). Give the base at least one block of every kind with sizes that "
                        "tell them apart, or pass a base as deep as the model.")
                return other
        found = self._same_kind(name, shape)
        if found is None and all(len(self.size_map.get(size, ())) == 1 for size in shape):
            self.by_sizes[name] = tuple(next(iter(self.size_map[size])) for size in shape)
            return ordered[0]
        if found is None:
            first = ordered[0]
            raise BaseShapeError(
                f"parameter {name!r} {shape} belongs to a block the base does not have, and no base layer has its "
                f"kind and fan pattern: the base's {first!r} {shapes.shapes[first]} has the same name pattern but "
                f"other sizes (the model's sizes stand for {self._mapped(shape)} at the base's width; e.g. the "
                "first block of a ResNet stage downsamples and the others do not). Give the base at least one "
                "block of every kind (two blocks per stage for a ResNet), or pass a base as deep as the model.")
        self.by_role[name] = found
        return found

    def _mapped(self, shape: tuple[int, ...]) -> tuple:
        return tuple(next(iter(self.size_map[s])) if len(self.size_map.get(s, ())) == 1 else "?" for s in shape)

    def _same_kind(self, name: str, shape: tuple[int, ...]) -> str | None:
        """The closest base parameter with the same leaf name, module class and sizes the map allows."""
        owner, _, leaf = name.rpartition(".")
        owner_class = self.model_classes.get(owner)
        options = []
        for other, base_shape in self.shapes.shapes.items():
            other_owner, _, other_leaf = other.rpartition(".")
            if other_leaf != leaf or not self._consistent(shape, base_shape):
                continue
            if self.classes and owner_class is not None and self.classes.get(other_owner) != owner_class:
                continue
            options.append(other)
        if not options:
            return None
        return _by_closeness(name, options)[0]


def _by_closeness(name: str, candidates: Iterable[str]) -> list[str]:
    """Candidates ordered by agreement with ``name`` on their components, innermost first (so a layer inside a
    block must match, and the block index or the stage may differ)."""
    parts = name.split(".")

    def key(other: str) -> list[bool]:
        return [a == b for a, b in zip(reversed(parts), reversed(other.split(".")))]

    return sorted(candidates, key=key, reverse=True)
