"""Adapters for real NAS benchmark tables (NAS-Bench-201, NAS-Bench-Graph) and a runner for search strategies.

The tables ship in the optional ``bench`` extra and are imported lazily: without it, loading a
table raises :class:`BenchmarkUnavailable` naming ``pip install -e ".[bench]"``. The runner's
names are imported from ``runner`` when first asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from nasmtl.nasbench.table import BenchmarkError, BenchmarkUnavailable, Table, load_table, table_names

_LAZY = {"register_strategy": "runner", "run_benchmark": "runner", "strategy_factory": "runner"}

__all__ = ["BenchmarkError", "BenchmarkUnavailable", "Table", "load_table", "table_names", *_LAZY]


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, imported from its module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    return value
