"""Base shapes: read them from a module, a mapping or a file, and match them to a model by parameter name.

A dimension is a *width* dimension when its size differs between the model and the base (or between the
base and an optional ``delta``, or when a shapes file marks it so). Names are matched exactly first; a
shallower or deeper base is matched with numeric module indices treated as one pattern, so
``blocks.7.mlp.fc.weight`` finds ``blocks.0.mlp.fc.weight``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import torch
from torch import nn

from ..errors import BaseShapeError, ShapesFileError
from ..names import as_globs, glob_to_regex, index_pattern, match_any  # noqa: F401  (re-exported)

SHAPES_FORMAT = "hptransfer.shapes/1"


@dataclass
class BaseShapes:
    """Shapes of the base model, keyed by parameter name.

    Attributes:
        shapes: base size of every dimension; ``None`` marks a finite dim whose size a file did not record.
        width: per parameter, which dims are known to be width dims regardless of the model (from a file
            or a delta); empty when only size comparison decides.
        modules: names of the base's modules (used to count residual branches of a shallower base).
    """

    shapes: dict[str, tuple[int | None, ...]]
    width: dict[str, tuple[bool, ...]] = field(default_factory=dict)
    modules: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.modules:
            self.modules = module_names_from_params(self.shapes)

    @property
    def by_pattern(self) -> dict[str, list[str]]:
        """Parameter names grouped by their index pattern (cached)."""
        cache = self.__dict__.get("_by_pattern")
        if cache is None or cache[0] != len(self.shapes):
            grouped: dict[str, list[str]] = {}
            for other in self.shapes:
                grouped.setdefault(index_pattern(other), []).append(other)
            cache = (len(self.shapes), grouped)
            self.__dict__["_by_pattern"] = cache
        return cache[1]


BaseLike = Union[nn.Module, Mapping[str, Sequence[int]], str, os.PathLike, BaseShapes]


def module_names_from_params(names: Iterable[str]) -> set[str]:
    """Every module prefix of a set of parameter names (``a.b.weight`` gives ``a`` and ``a.b``)."""
    prefixes: set[str] = set()
    for name in names:
        parts = name.split(".")[:-1]
        for end in range(1, len(parts) + 1):
            prefixes.add(".".join(parts[:end]))
    return prefixes


def shapes_of(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of all parameters of a module, tied aliases included (works on the meta device)."""
    return {n: tuple(p.shape) for n, p in module.named_parameters(remove_duplicate=False)}


def load_base(base: BaseLike, delta: BaseLike | None = None) -> BaseShapes:
    """Turn any accepted ``base`` (module, mapping, file path) into BaseShapes; mark dims a delta changes."""
    shapes = _read_base(base)
    if delta is not None:
        delta_shapes = _read_base(delta, "delta")
        for name, dims in shapes.shapes.items():
            other = delta_shapes.shapes.get(name)
            if other is None:
                other = _find_by_pattern(name, delta_shapes.shapes)
            if other is None or len(other) != len(dims):
                continue
            known = shapes.width.get(name, (False,) * len(dims))
            shapes.width[name] = tuple(
                k or (a is not None and b is not None and a != b) for k, a, b in zip(known, dims, other)
            )
    return shapes


def _read_base(base: BaseLike, argument: str = "base") -> BaseShapes:
    if isinstance(base, BaseShapes):
        return BaseShapes(dict(base.shapes), dict(base.width), set(base.modules))
    if isinstance(base, nn.Module):
        names = {n for n, _ in base.named_modules() if n}
        return BaseShapes(shapes_of(base), {}, names)
    if isinstance(base, (str, os.PathLike)):
        return read_shapes_file(base)
    if isinstance(base, Mapping):
        try:
            shapes = {str(k): tuple(None if d is None else int(d) for d in v) for k, v in base.items()}
        except (TypeError, ValueError) as err:
            raise BaseShapeError(
                f"base mapping must be {{param_name: shape}} with integer dims; could not read it ({err})"
            ) from err
        return BaseShapes(shapes)
    raise BaseShapeError(
        f"{argument} must be an nn.Module, a {{name: shape}} mapping or a path to a shapes file, got {type(base)!r}"
    )


def read_shapes_file(path: str | os.PathLike) -> BaseShapes:
    """Read an hptransfer JSON shapes file, or a mup ``.bsh`` YAML file (``null`` = finite dim)."""
    path = Path(path)
    if not path.is_file():
        raise ShapesFileError(f"shapes file {str(path)!r} does not exist; write one with hptransfer.save_shapes")
    text = path.read_text()
    if path.suffix == ".bsh" or not text.lstrip().startswith("{"):
        return _parse_bsh(text, path)
    try:
        data = json.loads(text)
        if data.get("format") != SHAPES_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {SHAPES_FORMAT!r}")
        shapes = {k: tuple(None if d is None else int(d) for d in v) for k, v in data["shapes"].items()}
        width = {k: tuple(bool(b) for b in v) for k, v in data.get("width", {}).items()}
        modules = set(data.get("modules", []))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ShapesFileError(
            f"could not parse shapes file {str(path)!r}: {err}. Re-create it with hptransfer.save_shapes"
        ) from err
    return BaseShapes(shapes, width, modules)


def _parse_bsh(text: str, path: Path) -> BaseShapes:
    import yaml

    try:
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("top level is not a mapping of parameter names")
        shapes: dict[str, tuple[int | None, ...]] = {}
        width: dict[str, tuple[bool, ...]] = {}
        for name, dims in data.items():
            if not isinstance(dims, list):
                raise ValueError(f"entry {name!r} is not a list of dims")
            shapes[str(name)] = tuple(None if d is None else int(d) for d in dims)
            width[str(name)] = tuple(d is not None for d in dims)
    except (yaml.YAMLError, ValueError, TypeError) as err:
        raise ShapesFileError(
            f"could not parse mup base-shapes file {str(path)!r}: {err}. Expected YAML "
            "{param_name: [base_dim or null, ...]} as written by mup.make_base_shapes"
        ) from err
    return BaseShapes(shapes, width)


def save_shapes(
    base: BaseLike, path: str | os.PathLike, delta: BaseLike | None = None
) -> Path:
    """Write base shapes (and the width dims a delta reveals) to an hptransfer JSON file; returns the path."""
    shapes = load_base(base, delta)
    path = Path(path)
    payload = {
        "format": SHAPES_FORMAT,
        "shapes": {k: list(v) for k, v in shapes.shapes.items()},
        "width": {k: list(v) for k, v in shapes.width.items()},
        "modules": sorted(shapes.modules),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
    return path


def _closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate that agrees with ``name`` on the most components, innermost first.

    Inner indices (a layer inside a Sequential) must match; outer ones (the block index) may not, since a
    shallower base has fewer blocks.
    """
    parts = name.split(".")
    best, best_key = None, None
    for other in candidates:
        key = [a == b for a, b in zip(reversed(parts), reversed(other.split(".")))]
        if best_key is None or key > best_key:
            best, best_key = other, key
    return best


def _find_by_pattern(name: str, shapes: Mapping[str, tuple]) -> tuple | None:
    pattern = index_pattern(name)
    other = _closest(name, (o for o in shapes if index_pattern(o) == pattern))
    return None if other is None else shapes[other]


def match_base_name(name: str, shapes: BaseShapes) -> str | None:
    """The base parameter that ``name`` corresponds to: same name, else same name up to block indices."""
    if name in shapes.shapes:
        return name
    return _closest(name, shapes.by_pattern.get(index_pattern(name), ()))


def resolve_dims(
    name: str, shape: torch.Size | tuple[int, ...], base_name: str, shapes: BaseShapes
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Base size and width flag of every dim of one parameter; raises BaseShapeError on rank mismatch."""
    base_dims = shapes.shapes[base_name]
    if len(base_dims) != len(shape):
        raise BaseShapeError(
            f"parameter {name!r} has shape {tuple(shape)} but its base {base_name!r} has {base_dims}: "
            "the ranks differ, so the base was built from a different architecture"
        )
    known = shapes.width.get(base_name, (False,) * len(shape))
    resolved = tuple(size if b is None else b for size, b in zip(shape, base_dims))
    width = tuple(k or s != b for k, s, b in zip(known, shape, resolved))
    return resolved, width
