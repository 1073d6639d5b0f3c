"""Rows of an array too large for memory (a memory-mapped ``.npy`` file), read only when a batch asks for them.

A ``Rows`` is what ``Split.x`` holds for data loaded from a folder of ``.npy`` files: training,
evaluation, ONNX runs and calibration index it batch by batch (``rows[start:stop]``, ``rows[idx]``),
so only that batch is ever in memory; splitting takes views (``subset``) and reads nothing.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["CHUNK_BYTES", "Rows", "chunks"]

CHUNK_BYTES = 16 << 20
"""About how many bytes one pass over a large array (checks, statistics) reads at a time."""


class Rows:
    """Rows ``index`` (default: all) of ``base``, read as float32 only when indexed.

    An index (int, slice, index array or boolean mask) reads just those rows, in sorted order for
    locality on disk, and returns them as an array in the order asked; ``np.asarray(rows)`` reads all.
    """

    def __init__(self, base: np.ndarray, index: np.ndarray | None = None) -> None:
        self.base = base
        self.index = np.arange(base.shape[0]) if index is None else np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(rows, *row shape)``."""
        return (int(self.index.shape[0]), *(int(d) for d in self.base.shape[1:]))

    @property
    def ndim(self) -> int:
        """Number of axes (rows and the row's own)."""
        return self.base.ndim

    @property
    def size(self) -> int:
        """Number of values."""
        return int(np.prod(self.shape))

    @property
    def dtype(self) -> np.dtype:
        """What reads give: float32 (the stored dtype is converted per batch)."""
        return np.dtype(np.float32)

    def __len__(self) -> int:
        """Number of rows."""
        return int(self.index.shape[0])

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        """The rows at ``key`` as a float32 array (one row for an int)."""
        if isinstance(key, (int, np.integer)):
            return self._read(self.index[[int(key)]])[0]
        return self._read(self.index[key])

    def subset(self, key: slice | np.ndarray) -> Rows:
        """The rows at ``key`` as another view of the same file (nothing is read)."""
        return Rows(self.base, self.index[key])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Every row, read now (for small data; large data is read through ``chunks`` or by batch)."""
        out = self._read(self.index)
        return out if dtype is None else out.astype(dtype, copy=False)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of ``base`` (sorted for reading, returned in the order given)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.empty((idx.shape[0], *self.base.shape[1:]), dtype=np.float32)
        if idx.size == 0:
            return out
        order = np.argsort(idx, kind="stable")
        ordered = idx[order]
        if bool((np.diff(ordered) == 1).all()):
            out[order] = self.base[int(ordered[0]):int(ordered[-1]) + 1]
        else:
            out[order] = self.base[ordered]
        return out


def chunks(x: np.ndarray, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, block)`` over ``x`` in blocks of about ``CHUNK_BYTES`` (or ``rows`` rows), as stored."""
    n = int(x.shape[0])
    if rows is None:
        row_bytes = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
        rows = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, n, rows):
        yield start, np.asarray(x[start:start + rows])
