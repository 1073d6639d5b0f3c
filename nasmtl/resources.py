"""Where the files nasmtl ships live: grammars, search spaces and predictors, and the benchmark tables.

In a source checkout they are the repository's top-level ``grammars/``, ``search_spaces/`` and
``predictors/``; a wheel carries copies inside the package (``nasmtl/_data/``, written by
``setup.py``'s build step), so an installed nasmtl finds them from any working directory.
Benchmark result tables are never looked up outside the install except in a source checkout:
``NASMTL_BENCHMARKS`` names their folder, else a checkout's ``../shared/benchmarks``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHIPPED", "benchmarks_dir", "find_shipped", "shipped_path", "shipped_roots"]

SHIPPED = ("grammars", "search_spaces", "predictors")
"""The top-level folders of the repository that an install carries."""

_SOURCE_ROOT = Path(__file__).resolve().parents[1]
_PACKAGED = Path(__file__).resolve().parent / "_data"
BENCHMARKS_ENV = "NASMTL_BENCHMARKS"


def _checkout() -> bool:
    return (_SOURCE_ROOT / "pyproject.toml").is_file() and (_SOURCE_ROOT / "grammars").is_dir()


def shipped_roots() -> list[Path]:
    """Folders that hold ``grammars/``, ``search_spaces/``, ``predictors/``: the checkout, then the package."""
    return ([_SOURCE_ROOT] if _checkout() else []) + [_PACKAGED]


def shipped_path(relative: str | os.PathLike[str]) -> Path:
    """A shipped file by its repository path (``"grammars/cnn.lark"``): where it exists, else its packaged place."""
    for root in shipped_roots():
        if (root / relative).exists():
            return root / relative
    return shipped_roots()[0] / relative


def find_shipped(path: str | os.PathLike[str]) -> Path:
    """``path`` as given when it exists (relative to the working directory), else the shipped file of that name."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    found = shipped_path(p)
    return found if found.exists() else p


def benchmarks_dir() -> Path:
    """The folder of benchmark result tables: ``$NASMTL_BENCHMARKS``, else a checkout's ``../shared/benchmarks``."""
    env = os.environ.get(BENCHMARKS_ENV)
    if env:
        return Path(env)
    if _checkout():
        return _SOURCE_ROOT.parent / "shared" / "benchmarks"
    return Path.cwd() / "shared" / "benchmarks"
