"""The parametrization schemes as data: per-role powers of the width multipliers plus a depth exponent.

Every factor here multiplies the *base* model's value (init std, learning rate, ...), so a model of the
base's own shape gets factor 1 everywhere. Width rules are TP5 Table 8 (the form `mup` implements, and the
one that allows tied embeddings); depth rules are TP6 Table 1 (alpha = 1/2) and CompleteP Table 1 (alpha = 1).
docs/rules.md gives the sources of each entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .errors import SchemeError

ROLES = ("input", "hidden", "output", "vector", "scalar")


@dataclass(frozen=True)
class Power:
    """A factor ``fan_in_mult ** fan_in * fan_out_mult ** fan_out``."""

    fan_in: float = 0.0
    fan_out: float = 0.0

    def __call__(self, fan_in_mult: float, fan_out_mult: float) -> float:
        if self.fan_in == 0 and self.fan_out == 0:
            return 1.0
        return float(fan_in_mult**self.fan_in * fan_out_mult**self.fan_out)


ONE = Power()


@dataclass(frozen=True)
class RoleRule:
    """How one parameter role scales with width (relative to the base model)."""

    init_std: Power = ONE
    multiplier: Power = ONE
    adam_lr: Power = ONE
    sgd_lr: Power = ONE
    muon_lr: Power = ONE  # spectral norm of Muon's step (its update has spectral norm ~1 at every width)


@dataclass(frozen=True)
class DepthExponent:
    """Exponent of the depth multiplier m_L as ``per_alpha * alpha + constant``."""

    per_alpha: float
    constant: float

    def __call__(self, alpha: float) -> float:
        return self.per_alpha * alpha + self.constant


# In-block factors of the depth schemes, as exponents of m_L (TP6 Table 1; CompleteP Table 1).
# The SGD row is the general-alpha extrapolation of TP6 Def. 6.1 and is unverified beyond alpha = 1/2.
DEPTH_EXPONENTS: Mapping[str, DepthExponent] = {
    "branch_multiplier": DepthExponent(-1.0, 0.0),  # m_L^-alpha
    "adam_lr": DepthExponent(1.0, -1.0),  # m_L^(alpha - 1)
    "sgd_lr": DepthExponent(2.0, -1.0),  # m_L^(2 alpha - 1)
    "eps": DepthExponent(-1.0, 0.0),  # m_L^-alpha
}


@dataclass(frozen=True)
class OptimizerFamily:
    """How one family of optimizers turns a role's rule into an LR factor (docs/rules.md, "Optimizers").

    Attributes:
        lr: the role's width factor for this family, from its RoleRule and the fan multipliers.
        depth_lr: key of DEPTH_EXPONENTS for the in-block factor, or None where the literature gives none.
        why: the reason, in one line (shown in docs and errors).
    """

    lr: Callable[[RoleRule, float, float], float]
    depth_lr: str | None
    why: str


OPTIMIZER_FAMILIES: Mapping[str, OptimizerFamily] = {
    "adam": OptimizerFamily(lambda r, fi, fo: r.adam_lr(fi, fo), "adam_lr",
                            "normalized update, entries ~1 (TP5 Table 8; CompleteP for depth)"),
    "sgd": OptimizerFamily(lambda r, fi, fo: r.sgd_lr(fi, fo), "sgd_lr", "update ~ gradient (TP5 Table 8, TP6)"),
    # Lion steps by sign(momentum): entries +-1 like Adam's normalized update, so Adam's width rules;
    # its depth factor is Adam's by the same analogy (not derived in the literature).
    "sign": OptimizerFamily(lambda r, fi, fo: r.adam_lr(fi, fo), "adam_lr",
                            "sign update, entries +-1 like Adam's (Lion: Chen et al. 2023)"),
    # torch.optim.Adafactor multiplies its normalized step by RMS(W), which scales like the init std: divide it out.
    "adafactor": OptimizerFamily(lambda r, fi, fo: r.adam_lr(fi, fo) / r.init_std(fi, fo), "adam_lr",
                                 "Adam-like step times RMS(W) (Shazeer & Stern 2018; torch.optim.Adafactor)"),
    # Muon's orthogonalized step has spectral norm ~1: the LR sets ||dW||_2 directly (hidden matrices only;
    # the hybrid puts every other parameter on AdamW with the "adam" rules). No depth rule is published.
    "muon": OptimizerFamily(lambda r, fi, fo: r.muon_lr(fi, fo), None,
                            "orthogonalized update, spectral norm ~1 (Jordan et al. 2024; spectral condition)"),
}

SP_TABLE: Mapping[str, RoleRule] = {role: RoleRule() for role in ROLES}

# TP5 Table 8 with base shapes (docs/rules.md, "Width").
MUP_TABLE: Mapping[str, RoleRule] = {
    "input": RoleRule(sgd_lr=Power(fan_out=1)),
    "vector": RoleRule(sgd_lr=Power(fan_out=1)),
    "hidden": RoleRule(
        init_std=Power(fan_in=-0.5), adam_lr=Power(fan_in=-1), sgd_lr=Power(fan_in=-1, fan_out=1),
        # the spectral condition (Yang, Simon & Bernstein 2023): ||dW||_2 ~ sqrt(fan_out / fan_in)
        muon_lr=Power(fan_in=-0.5, fan_out=0.5),
    ),
    "output": RoleRule(multiplier=Power(fan_in=-1), sgd_lr=Power(fan_in=1)),
    "scalar": RoleRule(),
}


@dataclass(frozen=True)
class Scheme:
    """A parametrization: a width table, an optional depth exponent and the attention/epsilon rules.

    Attributes:
        name: the name users pass to ``parametrize(scheme=...)``.
        width: per-role width rule.
        depth_alpha: branch multiplier exponent (m_L^-alpha); ``None`` means no depth rule at all.
        width_attention: attention logits scale like 1/d_head (mu-P) instead of 1/sqrt(d_head).
        scale_eps: Adam epsilon scales like 1/m_N (and m_L^-alpha in blocks).
        rescale_init: init="rescale" moves init stds to the table's values relative to the base; False (SP)
            leaves the model's own init, whatever its width dependence.
    """

    name: str
    width: Mapping[str, RoleRule] = field(default_factory=lambda: dict(SP_TABLE))
    depth_alpha: float | None = None
    width_attention: bool = False
    scale_eps: bool = False
    rescale_init: bool = True

    def depth_factor(self, quantity: str | None, depth_mult: float) -> float:
        """The in-block depth factor of ``quantity`` (a key of DEPTH_EXPONENTS) at depth multiplier m_L (1 for
        None: a family without a published depth rule)."""
        if self.depth_alpha is None or depth_mult == 1.0 or quantity is None:
            return 1.0
        exponent = DEPTH_EXPONENTS[quantity](self.depth_alpha)
        return 1.0 if exponent == 0 else float(depth_mult**exponent)

    @property
    def uses_depth(self) -> bool:
        return self.depth_alpha is not None


def depth_scheme(alpha: float, name: str | None = None) -> Scheme:
    """mu-P in width plus branch multiplier m_L^-alpha in depth (alpha in [1/2, 1] is the stable range)."""
    if not 0.5 <= alpha <= 1.0:
        raise SchemeError(f"depth alpha={alpha} is outside [0.5, 1] (TP6: stable and faithful only there)")
    return Scheme(
        name=name or f"depth_alpha_{alpha:g}",
        width=MUP_TABLE,
        depth_alpha=alpha,
        width_attention=True,
        scale_eps=True,
    )


SCHEMES: Mapping[str, Scheme] = {
    "sp": Scheme("sp", rescale_init=False),
    "mup": Scheme("mup", width=MUP_TABLE, width_attention=True, scale_eps=True),
    "depth_mup": depth_scheme(0.5, "depth_mup"),
    "completep": depth_scheme(1.0, "completep"),
}


def get_scheme(scheme: str | Scheme) -> Scheme:
    """Look a scheme up by name, or pass a Scheme through."""
    if isinstance(scheme, Scheme):
        return scheme
    if scheme not in SCHEMES:
        raise SchemeError(
            f"unknown scheme {scheme!r}; choose one of {sorted(SCHEMES)} "
            "or build one with hptransfer.rules.depth_scheme(alpha)"
        )
    return SCHEMES[scheme]
