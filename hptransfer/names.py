"""Module and parameter names as patterns: block indices folded (``blocks.#.attn``) and user globs."""

from __future__ import annotations

import re
from typing import Sequence

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")


def index_pattern(name: str) -> str:
    """Replace numeric module indices by ``#`` (``blocks.7.fc.weight`` -> ``blocks.#.fc.weight``)."""
    return _INDEX.sub("#", name)


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Compile a module-name glob: ``*`` matches within one dotted component, ``**`` across components."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif glob[i] == "?":
            out.append(r"[^.]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def as_globs(globs: str | Sequence[str] | None) -> list[str]:
    if globs is None:
        return []
    return [globs] if isinstance(globs, str) else list(globs)


def match_any(name: str, globs: Sequence[str]) -> bool:
    return any(glob_to_regex(g).match(name) for g in globs)


