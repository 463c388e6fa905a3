"""Deliberately broken schemes: one rule removed or doubled at a time, to prove a check catches each.

Each fault is a Scheme built from the correct one by changing one entry of its table (the rules are data, so a
fault is data too). Used by the fault-injection tests and ``bench/coord_faults.py``; not for training.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from ..rules import ONE, SCHEMES, Power, RoleRule, Scheme


@dataclasses.dataclass(frozen=True)
class DepthFault(Scheme):
    """A depth scheme with some in-block factors (keys of rules.DEPTH_EXPONENTS) left at 1."""

    dropped: tuple[str, ...] = ()

    def depth_factor(self, quantity: str, depth_mult: float) -> float:
        return 1.0 if quantity in self.dropped else super().depth_factor(quantity, depth_mult)


def _with(base: Scheme, name: str, **roles: Mapping[str, Power]) -> Scheme:
    table: dict[str, RoleRule] = dict(base.width)
    for role, change in roles.items():
        table[role] = dataclasses.replace(table[role], **change)
    return dataclasses.replace(base, name=name, width=table)


MUP = SCHEMES["mup"]

# width faults per optimizer family: name -> (broken scheme, the words a FAIL's likely cause must contain)
WIDTH_FAULTS: dict[str, dict[str, tuple[Scheme, str]]] = {
    "adam": {
        "sp": (SCHEMES["sp"], "grows with width"),
        "no readout multiplier": (_with(MUP, "no_readout_mult", output=dict(multiplier=ONE)), "readout"),
        "no hidden LR scaling": (_with(MUP, "no_hidden_lr", hidden=dict(adam_lr=ONE)), "hidden weights"),
        "hidden LR scaled twice": (_with(MUP, "hidden_lr_twice", hidden=dict(adam_lr=Power(fan_in=-2))),
                                   "scaled too much"),
        "no init rescale": (_with(MUP, "no_init", hidden=dict(init_std=ONE)), "grows with width"),
        "attention 1/sqrt(d)": (dataclasses.replace(MUP, name="attn_sqrt_d", width_attention=False),
                                "1/sqrt(d)"),
    },
    "sgd": {
        "sp": (SCHEMES["sp"], "width"),
        "no readout multiplier": (_with(MUP, "no_readout_mult", output=dict(multiplier=ONE)), "readout"),
        "no input/vector LR scaling": (_with(MUP, "no_input_lr", input=dict(sgd_lr=ONE), vector=dict(sgd_lr=ONE)),
                                       "shrinks with width"),
        "hidden LR scaled twice": (_with(MUP, "hidden_lr_twice", hidden=dict(sgd_lr=Power(fan_in=-2, fan_out=1))),
                                   "scaled too much"),
        "no init rescale": (_with(MUP, "no_init", hidden=dict(init_std=ONE)), "grows with width"),
        "attention 1/sqrt(d)": (dataclasses.replace(MUP, name="attn_sqrt_d", width_attention=False),
                                "1/sqrt(d)"),
    },
}

def _drop(base: str, name: str, *quantities: str) -> DepthFault:
    fields = {f.name: getattr(SCHEMES[base], f.name) for f in dataclasses.fields(Scheme)}
    return DepthFault(**dict(fields, name=name), dropped=quantities)


# depth faults: name -> (the correct scheme it breaks, the broken scheme)
DEPTH_FAULTS: dict[str, tuple[str, Scheme]] = {
    "no branch multiplier": ("completep", _drop("completep", "completep_no_branch_mult", "branch_multiplier")),
    # CompleteP's in-block Adam LR factor is m_L^0 = 1: only Depth-muP's m_L^-1/2 can be dropped
    "no in-block depth LR factor": ("depth_mup", _drop("depth_mup", "depth_mup_no_lr", "adam_lr")),
}
