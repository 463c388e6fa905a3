"""Which attribute of a module sets an attention call's scale, found by changing it and measuring again.

transformers keeps the scale in ``scaling``, GPT-NeoX next to a head dim it calls ``head_size``, timm in
``scale``, x-transformers in ``scale`` (None until set), research code anywhere. Names are hints at best, so
the probe tries them all at once: every float attribute of every module that runs an attention call (and each
None-valued attribute whose name says "scal") is multiplied by its own prime, the forward runs again, and each
call's new scale over its old one is a power of exactly one prime where one attribute sets it. The attributes
are restored whatever happens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from .attention import AttentionCall, AttentionRecorder
from .forward import run_probe

log = logging.getLogger(__name__)
EXPONENTS = (1.0, 2.0, 0.5, -1.0)  # scale ~ attribute ** e: a factor on q.k, on q and k each, a root, a divisor
SKIP = ("drop",)  # floats that are never a logit scale and must stay below one (dropout probabilities)


@dataclass(frozen=True)
class ScaleSite:
    """The float attribute that sets a call's logit scale: scale ~ getattr(module, attribute) ** exponent.

    ``value`` is the attribute's value the call's scale was measured at: its own, or for an attribute that was
    None (the code then computes a default), the call's scale (setting it to a number replaces the default)."""

    module: str
    attribute: str
    exponent: float = 1.0
    value: float = 1.0


def _primes() -> Any:
    found: list[int] = []
    candidate = 2
    while True:
        if all(candidate % p for p in found):
            found.append(candidate)
            yield float(candidate)
        candidate += 1


def _candidates(module: nn.Module, named: Sequence[str] | None) -> list[tuple[str, Any]]:
    if named is not None:
        return [(a, getattr(module, a, None)) for a in named]
    out = []
    for attribute, value in vars(module).items():
        if attribute.startswith("_") or any(s in attribute.lower() for s in SKIP) or attribute.endswith("eps"):
            continue
        if isinstance(value, float) and math.isfinite(value) and value != 0.0:
            out.append((attribute, value))
        elif value is None and "scal" in attribute.lower():
            out.append((attribute, None))
    return out


def find_scale_sites(root: nn.Module, forward: Callable[[], Any], calls: Sequence[AttentionCall],
                     named: Mapping[str, Sequence[str]] | None = None) -> tuple[dict[int, ScaleSite], list[str]]:
    """For each call (its index in ``calls``) whose scale an attribute sets, that attribute.

    Args:
        root: the model the calls were recorded in (by one probe forward of ``forward``).
        named: {module name: attributes} to try instead of every float attribute (``parametrize(attention=)``).

    Returns:
        ({call index: ScaleSite}, notes): notes say why a call has no site when that could not be told.
    """
    modules = dict(root.named_modules())
    owners = sorted({c.module for c in calls if c.module in modules})
    if named:
        owners = sorted(set(owners) | {m for m in named if m in modules})
    changed: list[tuple[str, str, Any, float]] = []  # (module, attribute, original value, prime)
    primes = _primes()
    first_scale = {c.module: c.scale for c in reversed(calls)}
    for owner in owners:
        for attribute, value in _candidates(modules[owner], (named or {}).get(owner)):
            if value is None and owner not in first_scale:
                continue
            changed.append((owner, attribute, value, next(primes)))
    if not changed:
        return {}, []
    for with_none in (True, False):
        active = [c for c in changed if with_none or c[2] is not None]
        if not active:
            break
        recorder = AttentionRecorder()
        try:
            for owner, attribute, value, prime in active:
                base_value = first_scale.get(owner, 1.0) if value is None else value
                setattr(modules[owner], attribute, base_value * prime)
            run_probe(root, forward, [recorder])
        except Exception as err:  # a changed attribute broke the forward (it was no scale): try without guesses
            log.info("scale-site probe failed with %d attribute(s) changed: %s", len(active), err)
            continue
        finally:
            for owner, attribute, value, _ in active:
                setattr(modules[owner], attribute, value)
        return _read_sites(calls, recorder.calls, active)
    return {}, ["could not run the model with its attention attributes changed, so none was found to set a scale"]


def _read_sites(calls: Sequence[AttentionCall], after: Sequence[AttentionCall],
                active: list[tuple[str, str, Any, float]]) -> tuple[dict[int, ScaleSite], list[str]]:
    same = len(after) == len(calls) and all(
        (a.kind, a.module, a.head_dim) == (b.kind, b.module, b.head_dim) for a, b in zip(calls, after))
    if not same:
        return {}, ["changing the attention attributes changed which attention calls ran, so none could be read"]
    sites: dict[int, ScaleSite] = {}
    notes: list[str] = []
    for index, (before, now) in enumerate(zip(calls, after)):
        if before.scale == 0 or abs(now.scale / before.scale - 1.0) < 1e-9:
            continue
        ratio = now.scale / before.scale
        hits = [ScaleSite(owner, attribute, e, before.scale if value is None else float(value))
                for owner, attribute, value, prime in active for e in EXPONENTS
                if abs(ratio - prime**e) < 1e-6 * prime**e]
        if len(hits) == 1:
            sites[index] = hits[0]
        else:
            names = ", ".join(f"{o}.{a}" for o, a, _, _ in active if o == before.module)
            notes.append(f"the scale of the {before.kind} call in {before.module or 'the root'!r} depends on "
                         f"several of its attributes ({names}), so none alone can set it")
    return sites, notes
