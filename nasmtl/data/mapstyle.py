"""Map-style datasets (``torch.utils.data.Dataset`` or anything with ``len`` and ``[i]``) as run data.

Each item is ``(input, {task: target})``: the input an array or tensor of one fixed shape, each
target a class id (classification) or a number or fixed-shape array (regression). The items are
read once, index by index, and written as an ``.npz`` file (``write_npz``) that the run's config
names, so resuming, the report, ``nasmtl retrain`` and ``nasmtl export`` read the same data the
search saw. The whole data set must fit in memory; streamed data is not built yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nasmtl.data.dataset import SPLIT_CODES, DataError
from nasmtl.files import write_atomic

__all__ = ["npz_bytes", "read_items", "read_splits", "write_npz"]


def _array(value: Any) -> np.ndarray:
    """A tensor (any device), array or number as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def read_items(dataset: Any, where: str = "dataset") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inputs and per-task targets of every item of ``dataset``; errors name the index and the key."""
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"{where}: a map-style dataset needs len() and [i] "
                        f"(got {type(dataset).__name__})") from None
    if n == 0:
        raise DataError(f"{where}: the dataset is empty")
    xs: list[np.ndarray] = []
    ys: dict[str, list[np.ndarray]] = {}
    keys: tuple[str, ...] = ()
    for i in range(n):
        try:
            item = dataset[i]
        except Exception as e:
            raise DataError(f"{where}[{i}]: reading the item failed ({type(e).__name__}: {e})") from None
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping)):
            raise DataError(f"{where}[{i}]: expected (input, {{task: target}}), got {type(item).__name__}"
                            + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
        x, targets = item
        xa = _array(x)
        if xa.dtype.kind not in "biuf":
            raise DataError(f"{where}[{i}]: the input must be numeric, got dtype {xa.dtype}")
        if i == 0:
            keys = tuple(str(k) for k in targets)
            if not keys:
                raise DataError(f"{where}[0]: the target dict is empty (one entry per task)")
            ys = {k: [] for k in keys}
        elif xa.shape != xs[0].shape:
            raise DataError(f"{where}[{i}]: input of shape {xa.shape}, but {where}[0]'s is {xs[0].shape}")
        if tuple(str(k) for k in targets) != keys and set(map(str, targets)) != set(keys):
            raise DataError(f"{where}[{i}]: tasks {sorted(map(str, targets))}, but {where}[0] has {sorted(keys)}")
        xs.append(xa.astype(np.float32, copy=False))
        for k in keys:
            ya = _array(targets[k])
            if ya.dtype.kind not in "biuf":
                raise DataError(f"{where}[{i}]: target {k!r} must be numeric, got dtype {ya.dtype}")
            if i and ya.shape != ys[k][0].shape:
                raise DataError(f"{where}[{i}]: target {k!r} of shape {ya.shape}, but {where}[0]'s is {ys[k][0].shape}")
            ys[k].append(ya)
    return np.stack(xs), {k: np.stack(v) for k, v in ys.items()}


def read_splits(data: Any, where: str = "data") -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """One dataset (split later by the config's fractions) or ``{"train": ds, "val": ds, "test": ds}``.

    Returns inputs, targets and the split codes (``None`` for one dataset).
    """
    if not isinstance(data, Mapping):
        x, y = read_items(data, where)
        return x, y, None
    unknown = sorted(set(map(str, data)) - set(SPLIT_CODES))
    missing = [s for s in SPLIT_CODES if s not in data]
    if unknown or missing:
        raise DataError(f"{where}: a dict of datasets needs exactly the keys train, val, test "
                        f"({'unknown: ' + ', '.join(unknown) if unknown else 'missing: ' + ', '.join(missing)})")
    parts = [read_items(data[s], f"{where}[{s!r}]") for s in SPLIT_CODES]
    shapes = {s: p[0].shape[1:] for s, p in zip(SPLIT_CODES, parts)}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{where}: the splits' inputs differ in shape ({shapes})")
    tasks = {s: sorted(p[1]) for s, p in zip(SPLIT_CODES, parts)}
    if len({tuple(t) for t in tasks.values()}) > 1:
        raise DataError(f"{where}: the splits have different tasks ({tasks})")
    x = np.concatenate([p[0] for p in parts])
    y = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    split = np.concatenate([np.full(len(p[0]), code, np.int8) for code, p in enumerate(parts)])
    return x, y, split


def npz_bytes(x: np.ndarray, targets: Mapping[str, np.ndarray], split: np.ndarray | None = None) -> bytes:
    """Inputs, targets and split codes as the bytes of the ``.npz`` file ``nasmtl.data.loaders.load_npz`` reads."""
    import io

    bad = [k for k in targets if k in ("x", "split")]
    if bad:
        raise DataError(f"task name {bad[0]!r} is reserved in .npz data files (inputs 'x', split codes 'split')")
    arrays = {"x": x, **{str(k): v for k, v in targets.items()}}
    if split is not None:
        arrays["split"] = split
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_npz(path: str | Path, x: np.ndarray, targets: Mapping[str, np.ndarray],
              split: np.ndarray | None = None) -> Path:
    """Write :func:`npz_bytes` to ``path`` atomically."""
    return write_atomic(path, npz_bytes(x, targets, split))
