"""A folder of ``.npy`` files as a multi-task data set that is read from disk batch by batch.

    [data]
    kind = "npy"
    path = "big"                      # big/x.npy: inputs (n, *input_shape), any numeric dtype
                                      # big/<task>.npy: one label array per task (n, ...)
                                      # big/split.npy: optional codes 0 train, 1 val, 2 test per example
    tasks = { age = "regression" }    # optional: which task files and their kinds (default: all, inferred)

``x.npy`` is opened with ``np.load(mmap_mode="r")`` and never read whole: the splits are views of
it (``nasmtl.data.rows.Rows``) and every batch is read when it is used, as float32. The loader reads
it once in chunks to check that every value is finite. Labels are small and are read into memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nasmtl.data.dataset import SPLIT_CODES, DataError, MultiTaskDataset, Task, assemble, check_labels
from nasmtl.data.rows import Rows, chunks

__all__ = ["INPUTS", "RESERVED", "load_npy_dir", "open_inputs", "write_labels"]

INPUTS = "x.npy"
RESERVED = ("x", "split")
"""File stems that are not tasks: the inputs and the split codes."""


def _load(path: Path, mmap: bool) -> np.ndarray:
    """One ``.npy`` array (memory-mapped when ``mmap``), or a DataError naming the file."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({str(exc)[:160]})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: expected one .npy array, found an archive of several")
    return arr


def _value_range(x: np.ndarray, where: Path) -> tuple[float, float]:
    """Smallest and largest input value, read chunk by chunk; a DataError at the first non-finite value."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: inputs must be numeric, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{where}: inputs need shape (n, ...) with n >= 1 and at least 2 dims, got {x.shape}")
    lo, hi = np.inf, -np.inf
    for start, block in chunks(x):
        if x.dtype.kind == "f":
            bad = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
            if bad.any():
                raise DataError(f"{where}: NaN or infinite value in row {start + int(np.flatnonzero(bad)[0])}")
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return lo, hi


def load_npy_dir(path: str | Path, tasks: Mapping[str, str] | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 0, name: str | None = None) -> MultiTaskDataset:
    """A data set from a folder with ``x.npy``, one ``<task>.npy`` per task and optionally ``split.npy``
    (see the module doc); the inputs stay on disk and are read per batch."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of .npy files (x.npy and one <task>.npy per task)")
    if not (root / INPUTS).is_file():
        raise DataError(f"{root}: no {INPUTS} (the inputs, shape (n, ...))")
    x = _load(root / INPUTS, mmap=True)
    lo, hi = _value_range(x, root / INPUTS)
    found = sorted(p.stem for p in root.glob("*.npy") if p.stem not in RESERVED)
    wanted = dict(tasks) if tasks is not None else dict.fromkeys(found)
    if not wanted:
        raise DataError(f"{root}: no task files besides {INPUTS} (one <task>.npy per task)")
    labels: dict[str, tuple[Task, np.ndarray]] = {}
    for task_name, kind in wanted.items():
        file = root / f"{task_name}.npy"
        if task_name in RESERVED:
            raise DataError(f"{file}: {task_name!r} holds the {'inputs' if task_name == 'x' else 'split codes'}, "
                            "it cannot be a task")
        if not file.is_file():
            raise DataError(f"{root}: no file {file.name} for task {task_name!r} (tasks: {', '.join(found) or 'none'})")
        labels[task_name] = check_labels(task_name, _load(file, mmap=False), kind, str(file))
    split = _load(root / "split.npy", mmap=False) if (root / "split.npy").is_file() else None
    data = assemble(name or root.name, Rows(x), labels, str(root), val_fraction, test_fraction, seed, split)
    data.preprocessing["inputs"] = {"scaling": f"as stored in {INPUTS} ({x.dtype}, read as float32), "
                                               f"values in [{lo:.4g}, {hi:.4g}]"}
    return data


def open_inputs(folder: Path, n: int, row_shape: Sequence[int]) -> np.ndarray:
    """A new float32 ``x.npy`` of ``n`` rows in ``folder``, memory-mapped for writing row by row."""
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / INPUTS, mode="w+", dtype=np.float32, shape=(n, *row_shape))


def write_labels(folder: Path, targets: Mapping[str, np.ndarray], split: np.ndarray | None) -> None:
    """One ``<task>.npy`` per task and, when given, ``split.npy`` (codes of ``SPLIT_CODES``) in ``folder``."""
    bad = [k for k in targets if k in RESERVED]
    if bad:
        raise DataError(f"task name {bad[0]!r} is reserved in .npy data folders (inputs 'x', split codes 'split')")
    for k, v in targets.items():
        np.save(folder / f"{k}.npy", v, allow_pickle=False)
    if split is not None:
        if split.max(initial=0) >= len(SPLIT_CODES):
            raise DataError(f"{folder}: split codes must be 0, 1 or 2")
        np.save(folder / "split.npy", split, allow_pickle=False)
