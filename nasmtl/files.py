"""Crash-safe file writes: a record is either the old file or the whole new one, and on disk.

Every record nasmtl keeps (trial JSON, ``pareto.json``, final records, configs, banks, cards) is
written to a temporary file in the same folder, flushed and ``fsync``'d, then renamed over the old
one (``os.replace``, atomic on POSIX and Windows), and the folder is synced so the rename itself
survives a power cut. A process killed at any moment leaves no half-written record behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "fsync_file", "read_json", "write_atomic", "write_json"]


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file that someone else wrote (an exporter, a quantizer) to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a synced temporary file and a rename; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (floats for numpy scalars) with :func:`write_atomic`."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=float) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON value of ``path``, or ``None`` when the file is missing, empty or cut short."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
