"""Adapters for real NAS benchmark tables (NAS-Bench-201, NAS-Bench-Graph) and a runner for search strategies.

The tables ship in the optional ``bench`` extra and are imported lazily: without it, loading a
table raises :class:`BenchmarkUnavailable` naming ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

from nasmtl.benchmarks.table import BenchmarkError, BenchmarkUnavailable, Table, load_table, table_names

__all__ = ["BenchmarkError", "BenchmarkUnavailable", "Table", "load_table", "table_names"]
