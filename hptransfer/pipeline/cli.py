"""How the recipes end: one exit code per outcome, and a short message instead of a traceback for a mistake.

A CI job or a scheduler reads the exit code, so each outcome has its own:

| code | meaning |
|---|---|
| 0 | done (a coordinate check: PASS) |
| 1 | a result that is a failure: a coordinate check FAIL, a target that diverged |
| 2 | a coordinate check that could not decide (INCONCLUSIVE) |
| 3 | a configuration or usage mistake: an unknown key or group, a bad value, a missing file. One line on
|   | stderr names the setting; nothing is started, so the corrected command reruns cleanly |
| 4 | an internal error (a bug, or a failure of the machine): the full traceback is printed |

``HPT_FULL_ERROR=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) prints the full traceback for code 3 too. Ctrl-C
keeps Python's own ending (the interrupted run resumes when the same command runs again).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Any, Callable

from ..errors import HptError

EXIT_OK, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_CODES = {"ok": EXIT_OK, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE, "usage": EXIT_USAGE,
              "internal": EXIT_INTERNAL}
_started = False  # set once Hydra has composed the config and handed it to the task


def full_errors() -> bool:
    return any(os.environ.get(name, "") not in ("", "0") for name in ("HPT_FULL_ERROR", "HYDRA_FULL_ERROR"))


def usage_error(message: str) -> None:
    """Print a configuration mistake in one line (or with its traceback when asked) and exit with code 3."""
    if full_errors():
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    if not full_errors():
        print("(HPT_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def guarded(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a recipe's task function (inside ``hydra.main``): an HptError exits 3 with its message, any other
    exception 4 with its traceback; SystemExit and KeyboardInterrupt pass through."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _started
        _started = True
        try:
            return task(*args, **kwargs)
        except HptError as err:
            usage_error(str(err))
        except Exception:  # noqa: BLE001 - reported with its traceback, under its own exit code
            traceback.print_exc()
            print("error: an internal error (the traceback above); please report it", file=sys.stderr)
            sys.exit(EXIT_INTERNAL)
    return wrapper


def entry(main: Callable[[], Any]) -> None:
    """Run a ``hydra.main`` function from ``__main__``. Hydra exits 1 for a config it cannot compose (an unknown
    key or group, a wrong type); before the task has started that is a usage mistake, so it becomes 3."""
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _started:
            sys.exit(EXIT_USAGE)
        raise
