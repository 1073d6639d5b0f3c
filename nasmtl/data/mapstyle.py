"""Map-style datasets (``torch.utils.data.Dataset`` or anything with ``len`` and ``[i]``) as run data.

Each item is ``(input, {task: target})``: the input an array or tensor of one fixed shape, each
target a class id (classification) or a number or fixed-shape array (regression). The items are
read once, index by index, and written into the run (``store``), whose config then names that
file, so resuming, the report, ``nasmtl retrain`` and ``nasmtl export`` read the same data the
search saw. Up to ``STREAM_BYTES`` of inputs they are gathered in memory and written as one
``.npz`` file; larger data is written item by item into a memory-mapped ``.npy`` folder
(``nasmtl.data.npydir``), so neither writing nor training holds more than a batch of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from nasmtl.data.dataset import SPLIT_CODES, DataError
from nasmtl.data.npydir import open_inputs, write_labels
from nasmtl.files import write_atomic

__all__ = ["STREAM_BYTES", "input_bytes", "npz_bytes", "read_items", "read_splits", "store", "write_npy_dir",
           "write_npz"]

STREAM_BYTES = 256 << 20
"""Inputs (as float32) above this size are written to a memory-mapped ``.npy`` folder, not an ``.npz`` file."""

DIGEST_FILE = "sha256.txt"
"""In a written ``.npy`` folder: the digest of the items, so a resume can tell whether it was given the same data."""


def _array(value: Any) -> np.ndarray:
    """A tensor (any device), array or number as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _length(dataset: Any, where: str) -> int:
    """``len(dataset)``, or a DataError for something that is not a non-empty map-style dataset."""
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"{where}: a map-style dataset needs len() and [i] "
                        f"(got {type(dataset).__name__})") from None
    if n == 0:
        raise DataError(f"{where}: the dataset is empty")
    return n


Like = tuple[str, tuple[int, ...], dict[str, tuple[int, ...]]]
"""Another split's name, input shape and target shapes, that a split's items must match."""


def _items(dataset: Any, where: str, like: Like | None = None) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Each item as (float32 input, {task: target}), checked against the first one (or against ``like``);
    errors name the index and the key."""
    n = _length(dataset, where)
    first, shape, target_shapes = like if like is not None else (where, None, {})
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
        keys = tuple(str(k) for k in targets)
        if shape is None:
            if not keys:
                raise DataError(f"{where}[0]: the target dict is empty (one entry per task)")
            shape = xa.shape
        elif xa.shape != shape:
            raise DataError(f"{where}[{i}]: input of shape {xa.shape}, but {first}[0]'s is {shape}")
        if target_shapes and set(keys) != set(target_shapes):
            raise DataError(f"{where}[{i}]: tasks {sorted(keys)}, but {first}[0] has {sorted(target_shapes)}")
        out: dict[str, np.ndarray] = {}
        for k in (keys if not target_shapes else target_shapes):
            ya = _array(targets[k])
            if ya.dtype.kind not in "biuf":
                raise DataError(f"{where}[{i}]: target {k!r} must be numeric, got dtype {ya.dtype}")
            if k in target_shapes and ya.shape != target_shapes[k]:
                raise DataError(f"{where}[{i}]: target {k!r} of shape {ya.shape}, but {first}[0]'s is {target_shapes[k]}")
            out[k] = ya
        target_shapes = target_shapes or {k: v.shape for k, v in out.items()}
        yield xa.astype(np.float32, copy=False), out


def read_items(dataset: Any, where: str = "dataset") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inputs and per-task targets of every item of ``dataset``; errors name the index and the key."""
    xs: list[np.ndarray] = []
    ys: dict[str, list[np.ndarray]] = {}
    for xa, targets in _items(dataset, where):
        xs.append(xa)
        for k, v in targets.items():
            ys.setdefault(k, []).append(v)
    return np.stack(xs), {k: np.stack(v) for k, v in ys.items()}


def _parts(data: Any, where: str) -> list[tuple[str, Any]]:
    """``[(where, dataset)]`` for one dataset, one entry per split (train, val, test) for a dict of three."""
    if not isinstance(data, Mapping):
        return [(where, data)]
    unknown = sorted(set(map(str, data)) - set(SPLIT_CODES))
    missing = [s for s in SPLIT_CODES if s not in data]
    if unknown or missing:
        raise DataError(f"{where}: a dict of datasets needs exactly the keys train, val, test "
                        f"({'unknown: ' + ', '.join(unknown) if unknown else 'missing: ' + ', '.join(missing)})")
    return [(f"{where}[{s!r}]", data[s]) for s in SPLIT_CODES]


def input_bytes(data: Any, where: str = "data") -> int:
    """The float32 bytes of all inputs of ``data`` (one dataset or a dict of splits), from the first item's shape."""
    parts = _parts(data, where)
    first, _ = next(_items(parts[0][1], parts[0][0]))
    return sum(_length(ds, w) for w, ds in parts) * int(first.size) * 4


def write_npy_dir(data: Any, folder: Path, where: str = "data") -> str:
    """Write ``data`` into ``folder`` item by item (``x.npy`` memory-mapped, labels, split codes when a dict
    of splits); returns the hex digest of the items (also kept in ``DIGEST_FILE``)."""
    import hashlib

    parts = _parts(data, where)
    lengths = [_length(ds, w) for w, ds in parts]
    first, first_targets = next(_items(parts[0][1], parts[0][0]))
    x = open_inputs(folder, sum(lengths), first.shape)
    digest = hashlib.sha256()
    ys: dict[str, list[np.ndarray]] = {k: [] for k in first_targets}
    like: Like | None = None
    row = 0
    for w, ds in parts:
        for xa, targets in _items(ds, w, like):
            x[row] = xa
            row += 1
            digest.update(xa.tobytes())
            for k, v in targets.items():
                ys[k].append(v)
                digest.update(np.ascontiguousarray(v).tobytes())
        like = (parts[0][0], first.shape, {k: v.shape for k, v in first_targets.items()})
    x.flush()
    del x
    split = np.concatenate([np.full(n, code, np.int8) for code, n in enumerate(lengths)]) if len(parts) > 1 else None
    write_labels(folder, {k: np.stack(v) for k, v in ys.items()}, split)
    digest.update(b"" if split is None else split.tobytes())
    (folder / DIGEST_FILE).write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


def store(data: Any, npz_path: Path, folder: Path, fresh: bool, where: str = "data") -> dict[str, str]:
    """Write ``data`` into a run as ``npz_path`` or, above ``STREAM_BYTES``, as the ``.npy`` folder
    ``folder``; returns its ``[data]`` spec. Unless ``fresh``, data already there must be the same."""
    import shutil
    import tempfile

    other = (f"{{}}: run {npz_path.parent.name!r} was made with other data; resume it with the same "
             "dataset or choose a new name")
    if input_bytes(data, where) <= STREAM_BYTES:
        blob = npz_bytes(*read_splits(data, where))
        if not fresh and npz_path.is_file():
            if blob != npz_path.read_bytes():
                raise DataError(other.format(npz_path))
        else:
            write_atomic(npz_path, blob)
        return {"kind": "npz", "path": str(npz_path)}
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=npz_path.parent) as tmp:
        digest = write_npy_dir(data, Path(tmp) / "data", where)
        if not fresh and (folder / DIGEST_FILE).is_file():
            if (folder / DIGEST_FILE).read_text().strip() != digest:
                raise DataError(other.format(folder))
        else:
            shutil.rmtree(folder, ignore_errors=True)
            Path(tmp, "data").rename(folder)
    return {"kind": "npy", "path": str(folder)}


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
