"""A run dir that knows whether its run finished, so that the same command, run again, goes on with it.

Each pipeline run writes ``run_state.json`` into its dir once its config is checked: the config's fingerprint,
the process (host, pid) and ``status`` ("running", then "done" after the report). Hydra gives every new run a
fresh timestamped dir; when the same command is run again (the same config, whatever the time), the recipe
looks among the dir's siblings for an unfinished run of that config whose process is gone, and adopts it:
the log goes on in the old dir, the new empty dir is removed, and every stage resumes (the ledger keeps the
finished trials, the target restarts from its last checkpoint). ``resume=false`` starts a new run instead.
A dir given with ``hydra.run.dir=`` is used as it is (its ledger and checkpoint are resumed in place).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("hptransfer.progress")
STATE = "run_state.json"
NOT_PART_OF_THE_RUN = ("logger", "resume")  # settings that change how a run reports, not what it computes


def config_fingerprint(cfg: DictConfig) -> str:
    """A short hash of the resolved config without the keys in NOT_PART_OF_THE_RUN."""
    data = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_PART_OF_THE_RUN}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return None


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(directory / STATE)


def _alive(state: dict[str, Any]) -> bool:
    """Whether the process that wrote ``state`` still runs (on another host: assumed so, it cannot be told)."""
    if state.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(state.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def unfinished_sibling(directory: Path, fingerprint: str) -> Path | None:
    """The newest dir beside ``directory`` holding an unfinished run of this config whose process is gone."""
    found = []
    for sibling in directory.parent.iterdir() if directory.parent.is_dir() else ():
        if sibling == directory or not sibling.is_dir():
            continue
        state = read_state(sibling)
        if state and state.get("fingerprint") == fingerprint and state.get("status") != "done" and not _alive(state):
            found.append((state.get("started", ""), sibling))
    return max(found)[1] if found else None


def _move_logs(old: Path, new: Path) -> None:
    """Point the file log handlers that write into ``new`` at the same file names in ``old`` (appending)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == new.resolve():
            handler.acquire()
            try:
                handler.close()
                handler.baseFilename = str(old.resolve() / Path(handler.baseFilename).name)
                handler.mode = "a"
                handler.stream = handler._open()
            finally:
                handler.release()


@dataclass
class RunDir:
    path: Path
    resumed: bool
    fingerprint: str

    def finish(self) -> None:
        state = read_state(self.path) or {}
        _write_state(self.path, {**state, "status": "done", "finished": _now()})


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def open_run_dir(directory: Path, cfg: DictConfig, explicit: bool) -> RunDir:
    """The dir this run works in: an unfinished earlier run of the same config (when ``cfg.resume`` and the dir
    was not given explicitly), else ``directory``. Writes run_state.json and prints the dir (before any stage)."""
    fingerprint = config_fingerprint(cfg)
    chosen, resumed = directory, False
    if cfg.get("resume", True) and not explicit:
        earlier = unfinished_sibling(directory, fingerprint)
        if earlier is not None:
            _move_logs(earlier, directory)
            if not any(p.name not in (".hydra",) and not p.name.endswith(".log") for p in directory.iterdir()):
                shutil.rmtree(directory, ignore_errors=True)  # only Hydra's own files were there
            chosen, resumed = earlier, True
    elif explicit and (read_state(directory) or {}).get("status") == "running":
        resumed = True
    state = read_state(chosen) or {"started": _now()}
    _write_state(chosen, {**state, "fingerprint": fingerprint, "status": "running", "host": socket.gethostname(),
                          "pid": os.getpid(), "command": " ".join(sys.argv), "resumed_at": _now() if resumed else None})
    if resumed:
        log.info(f"resuming the unfinished run in {chosen} (finished trials and the target's last checkpoint are "
                 "kept); resume=false starts a new run instead")
    log.info(f"run dir: {chosen}")
    return RunDir(chosen, resumed, fingerprint)
