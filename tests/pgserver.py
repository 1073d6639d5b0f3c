"""A throw-away PostgreSQL server for tests and benchmarks (``initdb`` + ``pg_ctl`` of the installed package)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


class NoPostgres(RuntimeError):
    """PostgreSQL cannot be started here; the message says why (for a skip or a bench line)."""


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server on a free local port, yield its URL, stop it and delete its files."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise NoPostgres("PostgreSQL binaries (initdb, pg_ctl) are not installed; .ci/run installs the postgresql package")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise NoPostgres("psycopg is not installed (pip install -e '.[postgres]')") from None
    base = Path(tempfile.mkdtemp(prefix="nasmtl-pg-"))
    data = base / "pgdata"
    data.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            raise NoPostgres("running as root and there is no 'postgres' user to run the server") from None
        shutil.chown(data, "postgres")
        os.chmod(base, 0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        for cmd in ([initdb, "-D", str(data), "-A", "trust", "-U", "nasmtl"],
                    [pg_ctl, "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                     f"-p {port} -h 127.0.0.1 -k {data}", "start"]):
            done = subprocess.run(prefix + cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise NoPostgres(f"{cmd[0]} failed: {(done.stderr or done.stdout).strip()[:300]}")
        yield f"postgresql://nasmtl@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
