"""A throwaway PostgreSQL server for the ledger tests and benchmarks: initdb in a temporary folder, a Unix
socket only (no TCP port), trust authentication, stopped and deleted on exit.

Needs the server binaries (``initdb``, ``pg_ctl``) on PATH and the ``psycopg`` driver. PostgreSQL refuses to run
as root, so as root the server runs as the ``postgres`` system user (``runuser``).

    with postgres_server() as url:   # postgresql+psycopg://hpt@/postgres?host=/tmp/hpt-pg-...
        ...
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

USER = "hpt"


class PostgresUnavailable(RuntimeError):
    """The server binaries or the driver are missing; the message says what to install."""


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root needs `runuser` to start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--", *command]


def missing() -> str:
    """Why no server can be started here ("" when one can)."""
    for binary in ("initdb", "pg_ctl"):
        if shutil.which(binary) is None:
            return f"`{binary}` is not on PATH: install the PostgreSQL server binaries"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is missing: pip install 'psycopg[binary]' (in the dev extra)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs a `postgres` system user to run the server as"
    return ""


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL, stop it and delete its files."""
    reason = missing()
    if reason:
        raise PostgresUnavailable(reason)
    root = Path(tempfile.mkdtemp(prefix="hpt-pg-"))  # short: a Unix socket path has a 107-byte limit
    data = root / "data"
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    run = lambda *cmd: subprocess.run(_as_server_user(list(cmd)), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run("initdb", "-D", str(data), "--auth=trust", f"--username={USER}", "--no-sync")
        options = f"-k {root} -c listen_addresses='' -c fsync=off -c max_connections=200"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        try:
            yield f"postgresql+psycopg://{USER}@/postgres?host={root}"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    except subprocess.CalledProcessError as error:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise PostgresUnavailable(f"{' '.join(error.cmd)} failed: {error.stderr}{log[-2000:]}") from error
    finally:
        shutil.rmtree(root, ignore_errors=True)
