"""Storage URLs to optuna storages: a journal file by default, RDB (PostgreSQL, SQLite, MySQL) with heartbeats.

``open_storage(None, run_dir)`` is the journal file ``run_dir/study.journal`` (safe for several
local processes and for a killed-and-resumed search); ``postgresql://...``, ``sqlite:///...`` and
``mysql://...`` open an ``RDBStorage`` whose heartbeats let live workers fail and retry the
trials of dead ones; any other string is a journal file path. A storage that does not answer
raises ``StorageError`` with one line naming the URL.

A journal file whose last record was cut short by a crash (no final newline) has that fragment moved
to ``study.journal.torn-DATE`` before it is opened, under optuna's own file lock: left in place, the
next append would glue onto it and make the whole file unreadable. A damaged record further up is
reported with its line number and how to keep the trials before it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from nasmtl.config import ConfigError
from nasmtl.errors import first_line
from nasmtl.run.rundir import TORN_SUFFIX, RunDir

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
MAX_RETRY = 2

_RDB = re.compile(r"^(postgresql|postgres|sqlite|mysql)(\+\w+)?://", re.IGNORECASE)


class StorageError(ConfigError):
    """A storage URL that cannot be opened (unreachable server, bad path, unsupported scheme)."""


def is_rdb_url(url: str) -> bool:
    """Whether ``url`` names a relational database (rather than a journal file)."""
    return bool(_RDB.match(url))


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None, run_dir: Path | None = None, *, heartbeat: int = HEARTBEAT_SECONDS,
                 grace: int = GRACE_SECONDS) -> optuna.storages.BaseStorage:
    """The optuna storage for ``url`` (``None``: the run directory's journal file)."""
    if url is None:
        if run_dir is None:
            raise StorageError("no storage URL and no run directory to keep a journal file in")
        return _journal(RunDir(Path(run_dir)).journal)
    if is_rdb_url(url):
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                return RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                  engine_kwargs=_engine_kwargs(url), **_retry_callback())
        except ModuleNotFoundError as e:
            raise StorageError(f"storage {redact(url)}: needs the package '{e.name}' "
                               '(install the postgres extra: pip install -e ".[postgres]")') from None
        except Exception as e:
            detail = first_line(getattr(e, "orig", None) or e, 300, more="", empty=type(e).__name__)
            raise StorageError(f"storage {redact(url)} cannot be opened: {detail}") from None
    if "://" in url:
        raise StorageError(f"storage {redact(url)}: unsupported scheme (use postgresql://, sqlite:///, "
                           "mysql:// or a journal file path)")
    return _journal(Path(url))


def _retry_callback() -> dict[str, Any]:
    """Retry the trials of dead workers (optuna >= 4.9 names the callback after heartbeats)."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def _journal(path: Path) -> JournalStorage:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cut = repair_journal_tail(path)
        if cut:
            print(f"nasmtl: {path}: its last record was cut short by a crash ({cut} bytes, a write that never "
                  f"finished); moved to {cut_name(path)}*, every finished record kept", file=sys.stderr)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise StorageError(f"journal file {path} cannot be opened: {e.strerror or e}") from None
    except ValueError:
        line = damaged_line(path)
        where = f"line {line}" if line else "a record"
        keep = f"; the trials before it can be kept: head -n {line - 1} {path} > kept.journal" if line else ""
        raise StorageError(f"journal file {path}: {where} is damaged (not a journal record){keep}") from None


def cut_name(path: Path) -> str:
    """Prefix of the side files that hold a journal's torn tails (``study.journal.torn-``)."""
    return f"{path.name}{TORN_SUFFIX}"


def repair_journal_tail(path: Path) -> int:
    """Move a torn last record (bytes after the final newline) out of a journal file; returns their count.

    Holds the lock optuna's writers take (``JournalFileSymlinkLock``), so a record another process is
    appending at this moment is never mistaken for a torn one.
    """
    if not _torn(path):
        return 0
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        if not _torn(path):
            return 0
        size = path.stat().st_size
        with open(path, "r+b") as f:
            pos, chunk = size, 1 << 16
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                nl = f.read(pos - start).rfind(b"\n")
                if nl >= 0:
                    pos = start + nl + 1
                    break
                pos = start
            f.seek(pos)
            tail = f.read()
            side = path.with_name(cut_name(path) + time.strftime("%Y%m%d-%H%M%S"))
            side.write_bytes(tail)
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())
        return len(tail)
    finally:
        lock.release()


def _torn(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def damaged_line(path: Path) -> int | None:
    """The 1-based number of the first line of a journal file that is not a JSON record, if any."""
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, start=1):
                try:
                    json.loads(line)
                except ValueError:
                    return n
    except OSError:
        return None
    return None
