"""Loading multi-task data sets from files (.npz, .csv, MNIST idx, image and .npy folders) and from run-config specs.

Every problem with a file becomes one ``DataError`` line naming the file and the array, column
or line, never a numpy traceback.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import math
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nasmtl.data.dataset import (DataError, MultiTaskDataset, assemble, check_features, check_labels, display_name,
                                 standardized)
from nasmtl.data.folder import load_folder
from nasmtl.data.multimnist import multimnist
from nasmtl.data.npydir import load_npy_dir
from nasmtl.data.tasks import TASK_KINDS, Task

BUILTINS: dict[str, Callable[..., MultiTaskDataset]] = {"multimnist": multimnist}


def available_datasets() -> list[str]:
    """Names of the built-in data sets (usable as ``{"name": ...}`` specs)."""
    return sorted(BUILTINS)


def _existing(path: str | Path, what: str = "data file") -> Path:
    """The path if it is a file, else a DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} not found")
    return p


def load_npz(path: str | Path, tasks: Mapping[str, str] | None = None, val_fraction: float = 0.1,
             test_fraction: float = 0.1, seed: int = 0, name: str | None = None) -> MultiTaskDataset:
    """A data set from an .npz file with array ``x`` and one label array per task (kinds inferred if not given);
    an optional integer array ``split`` (0 train, 1 val, 2 test) fixes the splits instead of the fractions."""
    p = _existing(path)
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{p}: expected an .npz archive of named arrays, found a single .npy array")
    with archive:
        names = list(archive.files)

        def read(key: str) -> np.ndarray:
            if key not in names:
                raise DataError(f"{p}: no array {key!r} (arrays: {', '.join(names) or 'none'})")
            try:
                return archive[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DataError(f"{p}: array {key!r} cannot be read ({exc})") from None

        x = check_features(read("x"), f"{p}: array 'x'")
        split = read("split") if "split" in names else None
        wanted = dict(tasks) if tasks is not None else {k: None for k in names if k not in ("x", "split")}
        if not wanted:
            raise DataError(f"{p}: no task arrays besides 'x'")
        labels: dict[str, tuple[Task, np.ndarray]] = {}
        for task_name, kind in wanted.items():
            if task_name in ("x", "split"):
                raise DataError(f"{p}: {task_name!r} holds the {'inputs' if task_name == 'x' else 'split codes'} "
                                "and cannot be a task")
            arr = read(task_name)
            if arr.ndim >= 1 and arr.shape[0] != x.shape[0]:
                raise DataError(f"{p}: array {task_name!r} has {arr.shape[0]} rows but 'x' has {x.shape[0]}")
            labels[task_name] = check_labels(task_name, arr, kind, f"{p}: array {task_name!r}")
    return assemble(name or display_name(p), x, labels, str(p), val_fraction, test_fraction, seed, split)


def _parse_float(cell: str) -> float | None:
    """A cell as a float, or None if it is not a number."""
    try:
        return float(cell)
    except ValueError:
        return None


def _task_columns(spec: Any, column: str, where: str) -> tuple[str, list[str]]:
    """(kind, columns) of one CSV task declaration: ``"kind"`` or ``{"kind": ..., "columns": [...]}``."""
    if isinstance(spec, str):
        return spec, [column]
    if isinstance(spec, Mapping) and isinstance(spec.get("kind"), str):
        cols = spec.get("columns", [column])
        if isinstance(cols, str) or not isinstance(cols, Sequence) or not cols:
            raise DataError(f"{where}: task {column!r}: 'columns' must be a non-empty list of column names")
        return spec["kind"], [str(c) for c in cols]
    raise DataError(f"{where}: task {column!r}: expected a kind ({', '.join(TASK_KINDS)}) "
                    "or {'kind': ..., 'columns': [...]}")


def load_csv(path: str | Path, features: Sequence[str] | None = None, tasks: Mapping[str, Any] | None = None,
             val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, delimiter: str = ",",
             name: str | None = None, standardize: bool = False) -> MultiTaskDataset:
    """A data set from a CSV file with a header row: numeric feature columns and one column per task.

    ``tasks`` maps a column to its kind; a multi-column task (multilabel, multi-dim regression) is
    ``{"kind": ..., "columns": [...]}``. Classification columns hold integer ids or class names.
    ``features=None`` takes every column not used by a task. ``standardize`` z-scores the features and the
    regression targets with the training split's statistics (``nasmtl.data.dataset.standardized``).
    """
    if not tasks:
        raise DataError(f"{path}: missing 'tasks' (a table of task column = kind) -- no task columns declared")
    p = _existing(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{p}: empty file, expected a header row")
            header = [h.strip() for h in header]
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{p}: line {reader.line_num} has {len(row)} fields, the header has {len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{p}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{p}: no data rows after the header")
    index = {h: i for i, h in enumerate(header)}

    def col(c: str) -> int:
        if c not in index:
            raise DataError(f"{p}: no column {c!r} (columns: {', '.join(header)})")
        return index[c]

    declared = {t: _task_columns(s, t, str(p)) for t, s in tasks.items()}
    used = {c for _, cols in declared.values() for c in cols}
    feats = list(features) if features is not None else [h for h in header if h not in used]
    if not feats:
        raise DataError(f"{p}: no feature columns")
    for c in feats:
        if c in used:
            raise DataError(f"{p}: column {c!r} is both a feature and a task")

    def numbers(c: str, what: str) -> np.ndarray:
        j = col(c)
        out = np.empty(len(rows), dtype=np.float64)
        for i, row in enumerate(rows):
            cell = row[j].strip()
            if not cell:
                raise DataError(f"{p}: column {c!r}, line {lines[i]}: empty {what}")
            v = _parse_float(cell)
            if v is None:
                raise DataError(f"{p}: column {c!r}, line {lines[i]}: non-numeric {what} {cell!r}")
            if not math.isfinite(v):
                raise DataError(f"{p}: column {c!r}, line {lines[i]}: NaN or infinite {what} {cell!r}")
            out[i] = v
        return out

    x = np.column_stack([numbers(c, "value") for c in feats]).astype(np.float32)
    labels: dict[str, tuple[Task, np.ndarray]] = {}
    for task_name, (kind, cols) in declared.items():
        where = f"{p}: column {cols[0]!r}" if len(cols) == 1 else f"{p}: columns {', '.join(map(repr, cols))}"
        if kind == "classification" and len(cols) == 1:
            labels[task_name] = _class_column(task_name, [r[col(cols[0])].strip() for r in rows], lines, where)
            continue
        arr = np.column_stack([numbers(c, "label") for c in cols])
        if len(cols) == 1 and kind != "multilabel":
            arr = arr[:, 0]
        labels[task_name] = check_labels(task_name, arr, kind, where, lambda i: f"line {lines[i]}")
    data = assemble(name or display_name(p), x, labels, str(p), val_fraction, test_fraction, seed)
    return standardized(data) if standardize else data


def _class_column(task: str, cells: list[str], lines: list[int], where: str) -> tuple[Task, np.ndarray]:
    """Class ids of a CSV column holding integer ids or (all non-numeric) class names."""
    for i, cell in enumerate(cells):
        if not cell or cell.lower() in ("nan", "na", "null", "none"):
            raise DataError(f"{where}, line {lines[i]}: missing (NaN) label")
    values = [_parse_float(c) for c in cells]
    if all(v is None for v in values):
        classes = tuple(sorted(set(cells)))
        lookup = {c: k for k, c in enumerate(classes)}
        return Task(task, "classification", len(classes), classes), np.array([lookup[c] for c in cells], np.int64)
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"{where}, line {lines[i]}: non-numeric label {cells[i]!r} among numeric class ids")
        if not math.isfinite(v):
            raise DataError(f"{where}, line {lines[i]}: NaN or infinite label {cells[i]!r}")
    return check_labels(task, np.array(values), "classification", where, lambda i: f"line {lines[i]}")


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """One MNIST-format idx array (gzipped or not), checked against its header."""
    p = _existing(path, "idx file")
    try:
        with open(p, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{p}: cannot read ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{p}: too short for an idx header ({len(raw)} bytes)")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim < 1:
        raise DataError(f"{p}: bad idx magic number 0x{raw[:4].hex()} (expected 0x0000TTDD: type TT, DD dims)")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{p}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - head != expected:
        raise DataError(f"{p}: idx header says shape {shape} ({expected} data bytes) but the file has {len(raw) - head}")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx(images_path: str | Path, labels_path: str | Path, val_fraction: float = 0.1,
             test_fraction: float = 0.1, seed: int = 0, task: str = "label",
             name: str | None = None) -> MultiTaskDataset:
    """A one-task data set from MNIST-format idx image and label files (uint8 images scaled to [0, 1])."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim == 1:
        raise DataError(f"{images_path}: idx images need at least 2 dims, got shape {images.shape}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: idx labels must be integers, got {labels.dtype}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: idx labels must be 1-D, got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images")
    x = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    if x.ndim == 3:
        x = x[:, None]
    x = check_features(x, f"{images_path}")
    checked = check_labels(task, labels, "classification", f"{labels_path}")
    return assemble(name or display_name(images_path), x, {task: checked}, str(images_path),
                    val_fraction, test_fraction, seed)


_FILE_LOADERS: dict[str, tuple[Callable[..., MultiTaskDataset], tuple[str, ...]]] = {
    "npz": (load_npz, ("path",)),
    "csv": (load_csv, ("path",)),
    "idx": (load_idx, ("images_path", "labels_path")),
    "folder": (load_folder, ("path", "labels_path")),
    "npy": (load_npy_dir, ("path",)),
}
_ALIASES = {"images": "images_path", "labels": "labels_path"}


def _call(fn: Callable[..., MultiTaskDataset], kwargs: dict[str, Any], what: str) -> MultiTaskDataset:
    """``fn(**kwargs)`` after checking the keys against its signature, so a typo is one clear error."""
    params = inspect.signature(fn).parameters
    for key in kwargs:
        if key not in params:
            raise DataError(f"data spec {what}: unknown option {key!r} (options: {', '.join(params)})")
    missing = [k for k, v in params.items() if v.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise DataError(f"data spec {what}: missing {', '.join(map(repr, missing))}")
    return fn(**kwargs)


def load_dataset(spec: Mapping[str, Any], base_dir: str | Path | None = None) -> MultiTaskDataset:
    """A data set from a run-config spec: ``{"name": "multimnist", ...}`` or ``{"kind": "npz"|"csv"|"idx", ...}``.

    Relative file paths are taken relative to ``base_dir`` (e.g. the config file's folder) when given.
    """
    if not isinstance(spec, Mapping):
        raise DataError(f"data spec must be a table/dict, got {type(spec).__name__}")
    options = {_ALIASES.get(k, k): v for k, v in spec.items()}
    kind = options.pop("kind", None)
    if kind is None or kind == "builtin":
        name = options.pop("name", None)
        if name is None:
            raise DataError("data spec needs 'name' (a built-in data set) or 'kind' (npz, csv, idx, folder, npy)")
        if name not in BUILTINS:
            raise DataError(f"unknown data set {name!r} (built-in: {', '.join(available_datasets())}; "
                            "or give kind = 'npz' | 'csv' | 'idx' with a path)")
        return _call(BUILTINS[name], options, repr(name))
    if kind not in _FILE_LOADERS:
        raise DataError(f"data spec: unknown kind {kind!r} (npz, csv, idx, folder, npy, or a built-in name)")
    fn, path_keys = _FILE_LOADERS[kind]
    for key in path_keys:
        if key in options and base_dir is not None and not Path(options[key]).is_absolute():
            options[key] = Path(base_dir) / options[key]
    return _call(fn, options, f"kind {kind!r}")
