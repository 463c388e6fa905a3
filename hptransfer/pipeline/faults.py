"""Named points where a test can kill the pipeline process, to prove that the same command resumes the run.

``HPT_KILL_AT=<point>:<n>`` sends SIGKILL to the process the n-th time it reaches ``<point>`` (n defaults to
1). The points: ``trial`` (a proxy trial has started and is RUNNING in the ledger), ``target_step`` (a target
training step's metrics row was written), ``report`` (the pictures are drawn, report.md is not yet written).
Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def point(name: str) -> None:
    spec = os.environ.get("HPT_KILL_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
