"""Plan: what parametrize() decided for every parameter and module, keyed by name (never stored on tensors).

The Plan is plain data: it survives ``state_dict``, ``deepcopy``, ``torch.compile``, DDP and FSDP2 because
nothing lives on the parameters themselves. It saves to and loads from JSON and prints as a table.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PLAN_FORMAT = "hptransfer.plan/1"


@dataclass
class ParamRecord:
    """One parameter's role and the factors that multiply the base model's hyperparameters.

    Attributes:
        name: canonical parameter name (the first name ``named_parameters()`` gives it).
        shape, base_shape: sizes in the model and in the base.
        role: input / hidden / output / vector / scalar (TP5 App. B classes).
        block: the block (residual branch's parent) this parameter belongs to, or None outside blocks.
        fan_in_mult, fan_out_mult: width multipliers of the fan-in and fan-out dims (1 when finite).
        depth_mult: m_L for parameters in a block, else 1.
        init_std: factor on the base init std.
        multiplier: forward multiplier acting on this parameter's (main) use.
        lr, weight_decay: factor per optimizer family ("adam" covers Adam/AdamW, "sgd" SGD).
        eps: factor on Adam's epsilon.
        aliases: other names of the same tensor (tied weights).
        init_source: where the base init std came from (see hptransfer.install.init).
        base_std: the std the base has for this tensor (None: a constant, or not known).
        fan_dims: (fan-in dim, fan-out dim) of a matrix, None where it has none.
        stacked_dims: dims that index separate matrices (fused experts).
        matched: the base parameter it was matched to, when that has another name (an added block).
        measured: its role came from its use in a probe forward (False: from its module's class).
    """

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    role: str
    block: str | None
    fan_in_mult: float
    fan_out_mult: float
    depth_mult: float
    init_std: float
    multiplier: float
    lr: dict[str, float]
    weight_decay: dict[str, float]
    eps: float
    aliases: list[str] = field(default_factory=list)
    init_source: str = ""
    base_std: float | None = None
    fan_dims: tuple[int | None, int | None] | None = None
    stacked_dims: tuple[int, ...] = ()
    matched: str | None = None
    measured: bool = False


@dataclass
class ModuleRecord:
    """What parametrize() changes in a module's forward.

    Kinds: "readout" (its input times ``factor``), "input" and "branch" (its output times ``factor``),
    "attention" (with ``attribute``: that float attribute, the logit scale, times ``factor``; without: the SDPA
    calls the module itself makes, "" for the root, rescaled by ``factor``), "native_attention"
    (hptransfer.nn.SelfAttention's ``logit_scale_factor``), "constant" (a family's width-dependent constant in
    ``attribute`` set to ``value``, its value at the base's width; ``factor`` is the change).
    """

    name: str
    kind: str
    factor: float
    attribute: str | None = None
    value: float | None = None
    why: str = ""


@dataclass
class Plan:
    """The parametrization of one model relative to its base.

    Attributes:
        scheme: scheme name; depth_alpha its depth exponent (None without depth rules).
        width_mult: fan-in multiplier of the readout (the model's d_model multiplier), 1 without readout.
        depth_mult: m_L = branches in model / branches in base; n_branches, base_branches the counts.
        multipliers: the tunable constants (output, input, attn, branch).
        base_head_dim: head dim of the base for 1/d attention, or None.
        init: how weights were initialized ("rescale", "keep" or a float sigma).
        params: ParamRecord per canonical parameter name; modules: the forward multipliers.
        adapter: the model-family adapter that supplied readout, branches, attention and init (None: none).
        notes: advice on this model (e.g. what to set for depth transfer).
        check: the measured safety net's result (hptransfer.check.CheckReport as a dict; None: not run yet).
    """

    scheme: str
    depth_alpha: float | None
    width_mult: float
    depth_mult: float
    n_branches: int
    base_branches: int
    multipliers: dict[str, float]
    base_head_dim: int | None
    init: str | float
    params: dict[str, ParamRecord] = field(default_factory=dict)
    modules: list[ModuleRecord] = field(default_factory=list)
    adapter: str | None = None
    notes: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None

    # ---- lookup -----------------------------------------------------------------------------------
    def record(self, name: str) -> ParamRecord:
        """The record for a parameter name or one of its aliases."""
        if name in self.params:
            return self.params[name]
        for rec in self.params.values():
            if name in rec.aliases:
                return rec
        raise KeyError(name)

    def by_role(self, role: str) -> list[ParamRecord]:
        return [r for r in self.params.values() if r.role == role]

    # ---- serialization ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = PLAN_FORMAT
        data["params"] = [asdict(r) for r in self.params.values()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"not an hptransfer plan (format {data.get('format')!r}, want {PLAN_FORMAT!r})")
        body = {k: v for k, v in data.items() if k not in ("format", "params", "modules")}
        params = {}
        for raw in data["params"]:
            raw = dict(raw, shape=tuple(raw["shape"]), base_shape=tuple(raw["base_shape"]))
            if raw.get("fan_dims") is not None:
                raw["fan_dims"] = tuple(raw["fan_dims"])
            raw["stacked_dims"] = tuple(raw.get("stacked_dims", ()))
            params[raw["name"]] = ParamRecord(**raw)
        modules = [ModuleRecord(**m) for m in data["modules"]]
        return cls(**body, params=params, modules=modules)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON (atomically: temp file, then rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ---- display ----------------------------------------------------------------------------------
    def table(self) -> str:
        """A readable table of every parameter's role and factors."""
        head = (
            f"Plan(scheme={self.scheme}, width_mult={self.width_mult:g}, depth_mult={self.depth_mult:g} "
            f"[{self.n_branches}/{self.base_branches} branches], multipliers={self.multipliers}, "
            f"base_head_dim={self.base_head_dim}, init={self.init}"
            f"{', adapter=' + self.adapter if self.adapter else ''})"
        )
        cols = ["name", "shape", "role", "block", "m_in", "m_out", "init", "mult", "lr adam", "lr sgd",
                "wd adam", "eps"]
        rows = [cols]
        for r in self.params.values():
            rows.append([
                r.name + (f" (={','.join(r.aliases)})" if r.aliases else ""),
                "x".join(map(str, r.shape)),
                r.role,
                "yes" if r.block else "-",
                f"{r.fan_in_mult:g}",
                f"{r.fan_out_mult:g}",
                f"{r.init_std:.4g}",
                f"{r.multiplier:.4g}",
                f"{r.lr['adam']:.4g}",
                f"{r.lr['sgd']:.4g}",
                f"{r.weight_decay['adam']:.4g}",
                f"{r.eps:.4g}",
            ])
        widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
        lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        if self.modules:
            lines.append("forward multipliers: " + ", ".join(
                f"{m.name or '<root>'}[{m.kind}{'.' + m.attribute if m.attribute else ''}]={m.factor:.4g}"
                for m in self.modules))
        sources: dict[str, int] = {}
        for r in self.params.values():
            if r.init_source:
                sources[r.init_source] = sources.get(r.init_source, 0) + 1
        lines += [f"init std from: {source} ({count} parameter(s))" for source, count in sources.items()]
        matched = [r for r in self.params.values() if r.matched]
        if matched:
            lines.append(f"matched by kind, not name: {len(matched)} parameter(s) of added blocks, e.g. "
                         f"{matched[0].name} -> {matched[0].matched}")
        lines += [f"note: {note}" for note in self.notes]
        if self.check is not None:
            lines.append(f"check: {self.check.get('summary', '')}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Plan(scheme={self.scheme!r}, params={len(self.params)}, width_mult={self.width_mult:g}, "
                f"depth_mult={self.depth_mult:g})")
