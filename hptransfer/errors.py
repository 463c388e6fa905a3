"""Exception types for mistakes a user can make; each message names the culprit and the fix."""

from __future__ import annotations


class HptError(Exception):
    """Base class of every error hptransfer raises on bad input."""


class SchemeError(HptError, ValueError):
    """An unknown parametrization scheme or a malformed multiplier."""


class BaseShapeError(HptError, ValueError):
    """The base (proxy) shapes do not match the model's parameters."""


class ShapesFileError(HptError, ValueError):
    """A shapes file (hptransfer JSON or mup .bsh) could not be read."""


class ReadoutError(HptError, ValueError):
    """The output layer is ambiguous or missing."""


class BranchError(HptError, ValueError):
    """Residual branches are needed (depth schemes) but none were found, or a glob matched nothing."""


class AlreadyParametrizedError(HptError, RuntimeError):
    """parametrize() was called on a model that already carries a plan."""


class NotParametrizedError(HptError, RuntimeError):
    """An hptransfer function needs a plan but the model was never parametrized."""


class AttentionError(HptError, ValueError):
    """Attention that a mu-P scheme must rescale but hptransfer cannot reach (or cannot size)."""


class InitError(HptError, ValueError):
    """The base init std of some weights cannot be told from a meta base; names them and what to pass."""


class CheckError(HptError, ValueError):
    """The measured safety net found the parametrized model doing something mu-P does not predict."""


class ArgumentError(HptError, ValueError):
    """A public function's argument has the wrong type, sign or range (the message names it and its value)."""
