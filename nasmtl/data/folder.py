"""A folder of images as a multi-task data set: one sub-folder per class, more tasks from a CSV file.

    [data]
    kind = "folder"
    path = "photos"              # photos/<class>/<image>: the task "class" (or task = "...")
    size = [32, 32]              # resize every image to height x width (omit: all must share one size)
    channels = 1                 # 1 (grayscale) or 3 (RGB)
    mean = [0.5]                 # after scaling to [0, 1]: (x - mean) / std per channel (omit: [0, 1])
    std = [0.25]
    labels = "extra.csv"         # optional: a column "file" (path under the folder) and one column per task

Images are read with Pillow. Every error names the file (and the CSV row) it comes from; what was
done to the pixels is kept in the data set's ``preprocessing`` so exported models can be fed the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nasmtl.data.dataset import DataError, MultiTaskDataset, Task, assemble, check_labels

__all__ = ["IMAGE_SUFFIXES", "load_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _images(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folders that hold images) and ``(file, class id)`` pairs."""
    classes, files = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(f for f in sub.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if found:
            files += [(f, len(classes)) for f in found]
            classes.append(sub.name)
    if not classes:
        raise DataError(f"{root}: no class sub-folders with images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return classes, files


def _pixels(path: Path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {str(e)[:120]})") from None
    return a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1))


def _extra_labels(csv_path: Path, root: Path, files: Sequence[Path], tasks: Mapping[str, str] | None
                  ) -> dict[str, tuple[Task, np.ndarray]]:
    """Task labels per image from a CSV file with a ``file`` column (path under the folder, or the file name)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path}: cannot be read ({e})") from None
    if not rows or "file" not in rows[0]:
        raise DataError(f"{csv_path}: the header needs a column 'file' (the image's path under {root})")
    head = rows[0]
    names = [c for c in head if c != "file"] if tasks is None else list(tasks)
    missing = [c for c in names if c not in head]
    if missing or not names:
        raise DataError(f"{csv_path}: no column {missing[0]!r}" if missing else f"{csv_path}: no task columns")
    at = {c: head.index(c) for c in head}
    by_file: dict[str, list[str]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(head):
            raise DataError(f"{csv_path}:{n}: {len(row)} cells, the header has {len(head)}")
        by_file[row[at["file"]].replace("\\", "/")] = row
    out: dict[str, tuple[Task, np.ndarray]] = {}
    for name in names:
        values = []
        for f in files:
            row = by_file.get(f.relative_to(root).as_posix()) or by_file.get(f.name)
            if row is None:
                raise DataError(f"{csv_path}: no row for image {f.relative_to(root).as_posix()}")
            try:
                values.append(float(row[at[name]]))
            except ValueError:
                raise DataError(f"{csv_path}: column {name!r}, image {f.name}: {row[at[name]]!r} is not a number") from None
        out[name] = check_labels(name, np.asarray(values), None if tasks is None else tasks[name],
                                 f"{csv_path}: column {name!r}")
    return out


def load_folder(path: str | Path, size: Sequence[int] | None = None, channels: int = 1,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                labels_path: str | Path | None = None, tasks: Mapping[str, str] | None = None,
                task: str = "class", val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                name: str | None = None) -> MultiTaskDataset:
    """Images under ``path/<class>/`` (task ``task``), optionally more tasks from the CSV ``labels_path``."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of class sub-folders")
    if channels not in (1, 3):
        raise DataError(f"{root}: channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    hw = None
    if size is not None:
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise DataError(f"{root}: size must be [height, width] in pixels, got {list(size)}")
        hw = (int(size[0]), int(size[1]))
    classes, files = _images(root)
    arrays = [_pixels(f, hw, "L" if channels == 1 else "RGB") for f, _ in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        odd, shape = next((f, a.shape) for (f, _), a in zip(files, arrays) if a.shape != arrays[0].shape)
        raise DataError(f"{odd}: {shape[1]}x{shape[2]} pixels, but {files[0][0].name} has "
                        f"{arrays[0].shape[1]}x{arrays[0].shape[2]}; give size = [height, width] to resize")
    x = np.stack(arrays)
    pre: dict[str, Any] = {"images": "pixels / 255", "channels": channels}
    if hw is not None:
        pre["resize"] = list(hw)
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else [0.0] * channels, np.float32)
        s = np.asarray(std if std is not None else [1.0] * channels, np.float32)
        if m.shape != (channels,) or s.shape != (channels,) or (s <= 0).any():
            raise DataError(f"{root}: mean and std need one value per channel ({channels}), std > 0")
        x = (x - m[:, None, None]) / s[:, None, None]
        pre.update(mean=m.tolist(), std=s.tolist())
    ids = np.array([c for _, c in files], dtype=np.int64)
    labels = {task: (Task(task, "classification", len(classes), tuple(classes)), ids)}
    if labels_path is not None:
        extra = _extra_labels(Path(labels_path), root, [f for f, _ in files], tasks)
        if task in extra:
            raise DataError(f"{labels_path}: column {task!r} clashes with the folder's class task (set task = ...)")
        labels.update(extra)
    data = assemble(name or root.name, x, labels, str(root), val_fraction, test_fraction, seed)
    data.preprocessing.update(pre)
    return data
