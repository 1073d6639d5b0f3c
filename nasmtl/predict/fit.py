"""Train and ship predictors: group-aware train/test splits and the NAS-Bench-201 default predictor.

``python -m nasmtl.predict.fit [--cells N] [-o predictors/default.onnx]`` trains the shipped
default predictor on N distinct NAS-Bench-201 cells (ONNX graph features) and writes its card
with Kendall tau and Spearman measured on held-out cells (never isomorphic to a training cell).
``--datasets imagenet --cells 1000 -o predictors/nb201-imagenet16.onnx`` trains the shipped
transfer source (ImageNet16-120 only) of the ``predictor-from-imagenet16`` sampler.
``python -m nasmtl.predict.fit --run runs/NAME -o predictors/NAME.onnx`` trains one on the
completed trials of a search run (its objectives), holding out a quarter of its designs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nasmtl.predict.data import Dataset, nb201_dataset, run_dataset
from nasmtl.predict.model import EnsembleMLP, fit_ensemble, predict_torch, rank_metrics, save_predictor
from nasmtl.resources import shipped_path

DEFAULT_PATH = shipped_path("predictors/default.onnx")


def group_split(groups: Sequence[str], n_train_groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train/test masks: ``n_train_groups`` random groups train, every other group tests."""
    uniq = sorted(set(groups))
    if not 0 < n_train_groups < len(uniq):
        raise ValueError(f"need 0 < training groups < {len(uniq)}, got {n_train_groups}")
    rng = np.random.default_rng(seed)
    chosen = {uniq[i] for i in rng.permutation(len(uniq))[:n_train_groups]}
    train = np.array([g in chosen for g in groups])
    return train, ~train


def train_and_score(data: Dataset, train: np.ndarray, test: np.ndarray, seed: int = 0,
                    **fit: int | float) -> tuple[EnsembleMLP, dict[str, dict[str, float]]]:
    """Fit on the ``train`` rows; Kendall tau and Spearman per output on the ``test`` rows."""
    torch.set_num_threads(1)
    net = fit_ensemble(data.features[train], data.targets[train], seed=seed, **fit)  # type: ignore[arg-type]
    mean, _ = predict_torch(net, data.features[test])
    return net, rank_metrics(mean, data.targets[test], data.outputs)


def train_default(path: str | Path = DEFAULT_PATH, cells: int = 3000, seed: int = 0,
                  datasets: Sequence[str] = ("cifar10", "cifar100", "imagenet")) -> Path:
    """Train a NAS-Bench-201 predictor of ``datasets``' val_acc on ``cells`` distinct cells; returns the card path."""
    data = nb201_dataset(seed=seed, cached_only=True, datasets=datasets)
    train, test = group_split(data.groups, cells, seed)
    start = time.perf_counter()
    net, metrics = train_and_score(data, train, test, seed, steps=600, hidden=64)
    source = dict(data.source)
    source.update({"train_cells": int(len(set(np.array(data.groups)[train]))), "train_rows": int(train.sum()),
                   "test_cells": int(len(set(np.array(data.groups)[test]))), "test_rows": int(test.sum()),
                   "split": "by canonical cell (isomorphic cells never on both sides)",
                   "fit_seconds": round(time.perf_counter() - start, 1)})
    return save_predictor(net, path, data.outputs, source, metrics)


def train_from_run(run_dir: str | Path, path: str | Path, seed: int = 0, test_fraction: float = 0.25) -> Path:
    """Train a predictor of a run's objectives on its completed trials; returns the card path."""
    data = run_dataset(run_dir)
    n_groups = len(set(data.groups))
    if n_groups < 4:
        raise ValueError(f"{run_dir}: {n_groups} distinct trained design(s); need at least 4 to train and test")
    n_train = min(n_groups - 2, max(2, round(n_groups * (1 - test_fraction))))
    train, test = group_split(data.groups, n_train, seed)
    start = time.perf_counter()
    net, metrics = train_and_score(data, train, test, seed, steps=600, hidden=64)
    source = dict(data.source)
    source.update({"train_rows": int(train.sum()), "test_rows": int(test.sum()),
                   "split": "by canonical design", "fit_seconds": round(time.perf_counter() - start, 1)})
    return save_predictor(net, path, data.outputs, source, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Train ``predictors/default.onnx`` (needs the encoding cache: ``python -m nasmtl.predict.data``),
    or with ``--run`` a predictor of a search run's objectives."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--cells", type=int, default=3000, help="distinct training cells (default 3000)")
    ap.add_argument("--run", default=None, help="train on the completed trials of this run directory instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet",
                    help="NAS-Bench-201 data sets to predict (comma-separated; default all three)")
    ap.add_argument("-o", "--output", default=str(DEFAULT_PATH))
    a = ap.parse_args(argv)
    if a.run is not None and a.output == str(DEFAULT_PATH):
        ap.error("--run needs -o PATH (the shipped default predictor is trained on NAS-Bench-201)")
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    if a.run is None and datasets != ["cifar10", "cifar100", "imagenet"] and a.output == str(DEFAULT_PATH):
        ap.error("--datasets needs -o PATH (the shipped default predictor predicts all three data sets)")
    card = train_from_run(a.run, a.output, a.seed) if a.run else train_default(a.output, a.cells, a.seed, datasets)
    print(card.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
