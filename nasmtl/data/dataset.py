"""Multi-task data sets: splits of inputs and per-task targets, and the checks every loader shares.

Inputs are an array in memory or, for data larger than memory, ``Rows`` of a memory-mapped file
(``nasmtl.data.npydir``) that every user reads batch by batch; targets are always in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from nasmtl.data.rows import Rows
from nasmtl.data.tasks import TASK_KINDS, Task
from nasmtl.errors import NasmtlError


class DataError(NasmtlError, ValueError):
    """A data file or data spec that cannot be used; the message names the file and the place."""


@dataclass
class Split:
    """One split: inputs ``x`` (float32, (n, *input_shape); ``Rows`` of a file for data larger than memory),
    targets per task, and optional per-example metadata."""

    x: np.ndarray | Rows
    y: dict[str, np.ndarray]
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray) -> Split:
        """The examples at ``index`` (an index array or boolean mask), targets and metadata alike (``Rows``: a view)."""
        x = self.x.subset(index) if isinstance(self.x, Rows) else self.x[index]
        return Split(x, {k: v[index] for k, v in self.y.items()},
                     {k: v[index] for k, v in self.meta.items()})


@dataclass
class MultiTaskDataset:
    """A named data set: its tasks and the train/val/test splits they share."""

    name: str
    tasks: tuple[Task, ...]
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    """What was done to the raw values before training (e.g. z-scores with the training split's statistics),
    so a user of an exported model can prepare inputs the same way and read regression outputs back."""

    def task(self, name: str) -> Task:
        """The task called ``name``."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"data set {self.name!r} has no task {name!r} (tasks: {', '.join(self.task_names)})")

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks in order."""
        return [t.name for t in self.tasks]

    def describe(self) -> dict[str, Any]:
        """Tasks, kinds, shapes and split sizes as plain JSON-able values (for ``nasmtl data show``)."""
        tasks = []
        for t in self.tasks:
            entry: dict[str, Any] = {"name": t.name, "kind": t.kind, "n_outputs": t.n_outputs,
                                     "primary_metric": t.primary_metric}
            if t.classes is not None:
                entry["classes"] = list(t.classes)
            tasks.append(entry)
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "splits": {s: len(getattr(self, s)) for s in ("train", "val", "test")},
            "tasks": tasks,
            **({"preprocessing": self.preprocessing} if self.preprocessing else {}),
        }


def infer_kind(arr: np.ndarray) -> str:
    """Task kind of a label array: integers -> classification, 2-D 0/1 -> multilabel, floats -> regression."""
    if arr.dtype.kind in "iub":
        if arr.ndim == 2 and arr.size and np.isin(arr, (0, 1)).all():
            return "multilabel"
        return "classification" if arr.ndim == 1 else "regression"
    if arr.ndim == 2 and arr.size and np.isin(arr, (0.0, 1.0)).all():
        return "multilabel"
    return "regression"


def _row(i: int) -> str:
    """Default place of example ``i`` in error messages."""
    return f"row {i}"


def _first_bad_row(bad: np.ndarray) -> int:
    """Index of the first example with a flagged entry."""
    return int(np.argwhere(bad.reshape(bad.shape[0], -1).any(axis=1))[0, 0])


def check_features(x: Any, where: str, row_label: Callable[[int], str] = _row) -> np.ndarray:
    """Inputs as float32 with a batch axis, or a DataError for non-numeric or NaN/inf values."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numeric, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise DataError(f"{where}: features need shape (n, ...) with at least 2 dims, got {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"{where}: NaN or infinite feature value at {row_label(_first_bad_row(bad))}")
    return arr


def check_labels(name: str, arr: Any, kind: str | None, where: str,
                 row_label: Callable[[int], str] = _row) -> tuple[Task, np.ndarray]:
    """A task and its labels in the canonical dtype/shape, or a DataError naming the place of the problem."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: labels of task {name!r} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise DataError(f"{where}: labels of task {name!r} are a scalar, expected one per example")
    if kind is None:
        kind = infer_kind(arr)
    if kind not in TASK_KINDS:
        raise DataError(f"{where}: task {name!r} has unknown kind {kind!r} (one of {', '.join(TASK_KINDS)})")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"{where}: NaN or infinite label of task {name!r} at {row_label(_first_bad_row(bad))}")
    if kind == "classification":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise DataError(f"{where}: classification labels of task {name!r} must be 1-D class ids, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            frac = arr != np.round(arr)
            if frac.any():
                raise DataError(f"{where}: classification label of task {name!r} is not an integer "
                                f"at {row_label(_first_bad_row(frac))}")
        ids = arr.astype(np.int64)
        neg = ids < 0
        if neg.any():
            raise DataError(f"{where}: negative class id of task {name!r} at {row_label(_first_bad_row(neg))}")
        return Task(name, "classification", int(ids.max()) + 1 if ids.size else 1), ids
    if kind == "multilabel":
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(f"{where}: multilabel targets of task {name!r} must be a 2-D 0/1 matrix, got shape {arr.shape}")
        not01 = ~np.isin(arr, (0, 1))
        if not01.any():
            raise DataError(f"{where}: multilabel target of task {name!r} is not 0/1 at {row_label(_first_bad_row(not01))}")
        return Task(name, "multilabel", int(arr.shape[1])), arr.astype(np.float32)
    values = arr.astype(np.float32).reshape(arr.shape[0], -1)
    return Task(name, "regression", int(values.shape[1])), values


def explicit_splits(split: Any, n: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays of train/val/test from a per-example split code (0, 1, 2)."""
    s = np.asarray(split)
    if s.ndim != 1 or s.shape[0] != n:
        raise DataError(f"{where}: array 'split' must hold one code per example ({n}), got shape {s.shape}")
    if s.dtype.kind not in "iu":
        raise DataError(f"{where}: array 'split' must hold integer codes 0 (train), 1 (val), 2 (test), got dtype {s.dtype}")
    bad = (s < 0) | (s > 2)
    if bad.any():
        raise DataError(f"{where}: array 'split' has code {int(s[bad][0])} at {_row(_first_bad_row(bad))} "
                        "(codes: 0 train, 1 val, 2 test)")
    parts = tuple(np.flatnonzero(s == code) for code in range(3))
    empty = [SPLIT_CODES[i] for i, p in enumerate(parts) if p.size == 0]
    if empty:
        raise DataError(f"{where}: array 'split' leaves the {' and '.join(empty)} split empty")
    return parts


def random_splits(n: int, val_fraction: float, test_fraction: float, seed: int, where: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays of a seeded random train/val/test split; each asked-for split gets at least one example."""
    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise DataError(f"{where}: {label} must be in [0, 1), got {frac}")
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise DataError(f"{where}: {n} examples are too few for a train/val/test split "
                        f"(val_fraction={val_fraction}, test_fraction={test_fraction})")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test])


def standardized(data: MultiTaskDataset) -> MultiTaskDataset:
    """Features and regression targets as z-scores with the training split's mean and standard deviation.

    Tabular columns come in their own units (grams, millimetres); a network trains poorly on them and
    a regression loss in grams squared dwarfs every other task's. The statistics are recorded in
    ``preprocessing`` (apply ``(x - mean) / std`` to new inputs; outputs ``* std + mean`` give units back).
    """
    from dataclasses import replace

    def stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        return mean, np.where(std > 0, std, 1.0)

    xm, xs = stats(data.train.x.astype(np.float64))
    ys = {t.name: stats(data.train.y[t.name].astype(np.float64)) for t in data.tasks if t.kind == "regression"}

    def split(s: Split) -> Split:
        y = dict(s.y)
        for k, (m, sd) in ys.items():
            y[k] = ((s.y[k] - m) / sd).astype(np.float32)
        return Split(((s.x - xm) / xs).astype(np.float32), y, s.meta)

    pre = {"inputs": {"standardized": True, "mean": xm.tolist(), "std": xs.tolist()},
           "targets": {k: {"standardized": True, "mean": np.ravel(m).tolist(), "std": np.ravel(sd).tolist()}
                       for k, (m, sd) in ys.items()}}
    return replace(data, train=split(data.train), val=split(data.val), test=split(data.test), preprocessing=pre)


SPLIT_CODES = ("train", "val", "test")
"""Values 0, 1, 2 of an explicit ``split`` array (``.npz`` files, map-style datasets)."""


def assemble(name: str, x: np.ndarray, labels: Mapping[str, tuple[Task, np.ndarray]], where: str,
             val_fraction: float, test_fraction: float, seed: int, split: np.ndarray | None = None
             ) -> MultiTaskDataset:
    """A data set from checked features and labels, split at random under ``seed`` (or by ``split``:
    0 train, 1 val, 2 test per example, each split non-empty)."""
    if not labels:
        raise DataError(f"{where}: no task labels found")
    n = x.shape[0]
    for task_name, (_, arr) in labels.items():
        if arr.shape[0] != n:
            raise DataError(f"{where}: task {task_name!r} has {arr.shape[0]} labels but there are {n} examples")
    full = Split(x, {k: v for k, (_, v) in labels.items()})
    if split is None:
        tr, va, te = random_splits(n, val_fraction, test_fraction, seed, where)
    else:
        tr, va, te = explicit_splits(split, n, where)
    return MultiTaskDataset(name, tuple(t for t, _ in labels.values()), full.subset(tr), full.subset(va),
                            full.subset(te), tuple(int(d) for d in x.shape[1:]))


def display_name(path: str | Path) -> str:
    """A data set name from a file path (its stem)."""
    p = Path(path)
    name = p.name
    for suffix in (".gz", ".npz", ".npy", ".csv", ".idx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or p.name
