"""Checks of user-given numbers at the door of every public entry point, so that a wrong sign, a NaN or a string
fails with an error naming the argument (or config key), its value and what is allowed, before anything runs.

Torch's own optimizers refuse a negative LR; param groups built here bypass those checks, so they are made
here. Booleans are refused where a number is meant (``True`` is an int to Python).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .errors import ArgumentError


def number(name: str, value: Any, *, above: float | None = None, minimum: float | None = None,
           below: float | None = None, maximum: float | None = None, integer: bool = False, fix: str = "",
           error: type[Exception] = ArgumentError) -> Any:
    """``value`` if it is a finite real number (an int when ``integer``) inside the given bounds; else ``error``
    with a message that names ``name``, the value and the allowed range (and ``fix`` when given)."""
    kind = "an integer" if integer else "a finite number"
    bounds = [f"> {above:g}" if above is not None else "", f">= {minimum:g}" if minimum is not None else "",
              f"< {below:g}" if below is not None else "", f"<= {maximum:g}" if maximum is not None else ""]
    wanted = f"{kind} {' and '.join(b for b in bounds if b)}".strip()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer and not float(value).is_integer():
        ok = False
    if ok:
        ok = ((above is None or value > above) and (minimum is None or value >= minimum)
              and (below is None or value < below) and (maximum is None or value <= maximum))
    if not ok:
        raise error(f"{name}={value!r}: must be {wanted}" + (f"; {fix}" if fix else ""))
    return int(value) if integer else value


def device(name: str, value: Any, *, error: type[Exception] = ArgumentError) -> torch.device | None:
    """``value`` as a torch.device (None stays None), refused with ``error`` when torch does not know it or when it
    names CUDA and this torch sees none."""
    if value is None:
        return None
    try:
        chosen = torch.device(value)
    except (RuntimeError, TypeError) as err:
        reason = (str(err).splitlines() or [""])[0][:80]
        raise error(f"{name}={value!r} is not a device torch knows ({reason}...); use 'cpu', 'cuda' or 'cuda:N', or "
                    "leave it unset") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise error(f"{name}={value!r}: this torch sees no CUDA device; use 'cpu' or leave it unset")
    return chosen
