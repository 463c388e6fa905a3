"""mu-P's logit scale for every attention call, from the base's calls and the model's, and how to reach it.

mu-P carries the base's logit scale over with 1/d in place of 1/sqrt(d) (TP5 App. B.1): a call of head dim d
whose counterpart in the base applies scale s0 at head dim d0 must apply ``attn * s0 * d0 / d``, whatever the
family's convention (1/sqrt(d), a constant such as Gemma's query_pre_attn_scalar^-1/2, T5's 1). Both scales are
measured (hptransfer.probe.attention), so nothing assumes the convention. Each call is then reached through the
attribute that sets its scale (hptransfer.probe.scale_sites), or, for an SDPA call without one, by rescaling
the call itself; a hand-written or flex call without an attribute cannot be reached and is refused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from ..plan import ModuleRecord
from ..probe.attention import AttentionCall, inside
from ..probe.scale_sites import ScaleSite
from ..names import index_pattern

TOLERANCE = 1e-6


@dataclass
class AttentionDecision:
    """The attention records for the plan, the calls that cannot be reached, and the base's head dim."""

    records: list[ModuleRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    base_head_dim: int | None = None
    targets: list[float] = field(default_factory=list)  # per model call: the scale mu-P asks for


def _occurrences(calls: Sequence[AttentionCall]) -> list[int]:
    """Each call's index among the calls of its own module (the 2nd SDPA call in a module is occurrence 1)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for call in calls:
        out.append(seen[call.module])
        seen[call.module] += 1
    return out


def counterparts(model_calls: Sequence[AttentionCall], base_calls: Sequence[AttentionCall]) -> list[AttentionCall | None]:
    """The base call of each model call: same module (or the same module pattern, for an added block) and the same
    occurrence within it."""
    by_name: dict[tuple[str, int], AttentionCall] = {}
    by_pattern: dict[tuple[str, int], AttentionCall] = {}
    for call, k in zip(base_calls, _occurrences(base_calls)):
        by_name.setdefault((call.module, k), call)
        by_pattern.setdefault((index_pattern(call.module), k), call)
    return [by_name.get((c.module, k)) or by_pattern.get((index_pattern(c.module), k))
            for c, k in zip(model_calls, _occurrences(model_calls))]


def decide_attention(model_calls: Sequence[AttentionCall], base_calls: Sequence[AttentionCall] | None,
                     sites: dict[int, ScaleSite], *, width_attention: bool, attn: float, scheme: str,
                     native: set[str] = frozenset(), site_notes: Sequence[str] = (),
                     base_failure: str = "") -> AttentionDecision:
    """Records that give every call its target scale; problems for the calls that cannot be given it.

    Args:
        model_calls: the model's calls (probe forward). base_calls: the base's (None: the base could not run).
        sites: the attribute that sets each call's scale, by call index (probe.scale_sites).
        width_attention: the scheme's 1/d rule; without it only the ``attn`` multiplier applies.
        native: hptransfer.nn.SelfAttention modules (their calls are scaled by the layer itself).
    """
    decision = AttentionDecision()
    bases = counterparts(model_calls, base_calls or []) if width_attention else [None] * len(model_calls)
    factors: list[float | None] = []
    for index, call in enumerate(model_calls):
        where = call.module or "the model's own forward"
        if native and inside(call.module, set(native)):
            factors.append(None)
            decision.targets.append(call.scale)
            continue
        base = bases[index]
        if width_attention:
            if base is None:
                decision.problems.append(
                    f"attention ({call.kind}) in {where!r}, head dim {call.head_dim}: "
                    + (f"{base_failure or 'the base could not run'}, so its scale at the base's width is unknown: "
                       "pass the base as a model that runs on those inputs (the meta device is fine), or "
                       "base_head_dim=<the base's head dim> if the base scales by 1/sqrt(head dim)"
                       if base_calls is None else "the base ran no attention call there, so its scale at the base's "
                       "width is unknown; build the base from the same model class"))
                factors.append(None)
                decision.targets.append(call.scale)
                continue
            if decision.base_head_dim is None:
                decision.base_head_dim = base.head_dim
            target = attn * base.scale * base.head_dim / call.head_dim
        else:
            target = attn * call.scale
        decision.targets.append(target)
        if not (call.exact and (base is None or base.exact)):
            decision.problems.append(
                f"attention ({call.kind}) in {where!r}: its scale is multiplied by a 0-d tensor without values "
                "(the meta device), so it cannot be measured; pass the base (or the model) with values")
        factors.append(target / call.scale if call.scale else None)
    _reach(model_calls, factors, sites, decision, scheme, site_notes)
    return decision


def _reach(calls: Sequence[AttentionCall], factors: list[float | None], sites: dict[int, ScaleSite],
           decision: AttentionDecision, scheme: str, site_notes: Sequence[str]) -> None:
    by_site: dict[ScaleSite, list[tuple[int, float]]] = defaultdict(list)
    by_owner: dict[str, list[tuple[int, float]]] = defaultdict(list)
    unreachable: dict[tuple, list[str]] = defaultdict(list)
    for index, (call, factor) in enumerate(zip(calls, factors)):
        if factor is None:
            continue
        site = sites.get(index)
        if site is not None:
            by_site[site].append((index, factor))
        elif abs(factor - 1.0) <= TOLERANCE:
            continue
        elif call.kind == "sdpa":
            by_owner[call.module].append((index, factor))
        else:
            key = (call.kind, call.head_dim, round(call.scale, 9), round(call.scale * factor, 9))
            unreachable[key].append(call.module or "the model's own forward")
    for (kind, head_dim, scale, target), modules in unreachable.items():
        what = "flex_attention" if kind == "flex" else "hand-written (softmax over q @ k^T)"
        notes = f" ({'; '.join(site_notes)})" if site_notes else ""
        more = f" (and {len(modules) - 1} more like it: {', '.join(modules[1:4])}{' ...' if len(modules) > 4 else ''})" \
            if len(modules) > 1 else ""
        decision.problems.append(
            f"attention in {modules[0]!r}{more} is {what}, head dim {head_dim}, scale {scale:.4g}; under {scheme!r} "
            f"it must be {target:.4g}, and no attribute of its module sets it{notes}. Keep the scale in a float "
            "attribute the forward multiplies q @ k^T by (or passes as scale=) and hptransfer finds it; name it with "
            "parametrize(..., attention={'<module glob>': '<attribute>'}) if it lives elsewhere; or compute the "
            "attention with F.scaled_dot_product_attention, which hptransfer rescales")
    for site, entries in by_site.items():
        values = {round(f, 9) for _, f in entries}
        if len(values) > 1:
            decision.problems.append(
                f"attribute {site.attribute!r} of {site.module!r} sets the scale of {len(entries)} attention calls "
                f"that need different factors ({sorted(values)}); give each call its own attribute")
            continue
        factor = entries[0][1] ** (1.0 / site.exponent)
        decision.records.append(ModuleRecord(site.module, "attention", factor, site.attribute, site.value * factor))
    for owner, entries in by_owner.items():
        values = {round(f, 9) for _, f in entries}
        if len(values) > 1:
            decision.problems.append(
                f"{len(entries)} SDPA calls in {owner or 'the root'!r} need different factors ({sorted(values)}) "
                "and hptransfer rescales a module's calls by one factor; run them in separate modules")
            continue
        decision.records.append(ModuleRecord(owner, "attention", entries[0][1]))
