"""The Muon hybrid: torch.optim.Muon on the hidden matrices and AdamW on the rest, behind one optimizer."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..errors import SchemeError
from .closure import evaluate_closure


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon for the groups marked ``algorithm="muon"`` (2-D hidden matrices), torch.optim.AdamW for
    the rest, behind one Optimizer: LR schedulers, ``state_dict`` and checkpoints see one set of param groups
    and one state (the two inner optimizers share both)."""

    def __init__(self, groups: list[dict[str, Any]], muon: dict[str, Any] | None = None,
                 adamw: dict[str, Any] | None = None) -> None:
        self._muon_kwargs, self._adamw_kwargs = dict(muon or {}), dict(adamw or {})
        super().__init__(groups, {})
        self._inner: list[torch.optim.Optimizer] = []
        for algorithm, cls, kwargs in (("muon", torch.optim.Muon, self._muon_kwargs),
                                       ("adamw", torch.optim.AdamW, self._adamw_kwargs)):
            mine = [g for g in self.param_groups if g.get("algorithm") == algorithm]
            if mine:
                self._inner.append(cls(mine, **kwargs))  # fills each group's defaults in place: shared dicts
        self._link()

    def _link(self) -> None:
        for inner in self._inner:
            algorithm = "muon" if isinstance(inner, torch.optim.Muon) else "adamw"
            inner.param_groups = [g for g in self.param_groups if g.get("algorithm") == algorithm]
            inner.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._link()  # loading replaced the group dicts and the state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        for inner in self._inner:
            inner.step()
        return loss


MUON_KEYS = ("momentum", "nesterov", "ns_coefficients", "ns_steps", "adjust_lr_fn")


def build_muon(groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    muon = {k: v for k, v in kwargs.items() if k in MUON_KEYS}
    adamw = {k: v for k, v in kwargs.items() if k not in MUON_KEYS}
    return MuonWithAdamW(groups, muon=muon, adamw=adamw)


def muon_lr_adjustment(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """The factor torch.optim.Muon applies to a matrix's LR (``_adjust_lr`` in torch): "original" (the
    default) sqrt(max(1, fan_out / fan_in)); "match_rms_adamw" 0.2 sqrt(max(fan_out, fan_in))."""
    fan_out, fan_in = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, fan_out / fan_in))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(fan_out, fan_in))
    raise SchemeError(f"adjust_lr_fn={adjust_lr_fn!r}: choose 'original' or 'match_rms_adamw' (torch.optim.Muon)")
