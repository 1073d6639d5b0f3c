"""What multi-objective early stopping saves in trial time and costs in final hypervolume.

    python bench/early_stopping.py [--seeds 3] [--trials 12] [--epochs 4]

Runs the same small searches (MultiMNIST subset, the CNN grammar, random sampler, so both arms
see the same designs in the same order) with and without early stopping, same seeds, and prints
total trial seconds, trials stopped and final hypervolume per seed, with the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nasmtl.config import parse_config
from nasmtl.run.build import run_engine
from nasmtl.run.lifecycle import start_run

ROOT = Path(__file__).resolve().parents[1]


def config(seed: int, trials: int, epochs: int, early: bool) -> dict:
    return {
        "data": {"name": "multimnist", "n_train": 800, "n_val": 300, "n_test": 100},
        "space": {"grammar": str(ROOT / "grammars" / "cnn.lark"), "max_macs": 2_000_000},
        "objectives": [{"name": "left.accuracy", "direction": "maximize", "ref": 0.0},
                       {"name": "right.accuracy", "direction": "maximize", "ref": 0.0},
                       {"name": "macs", "direction": "minimize", "ref": 2_000_000}],
        "train": {"epochs": float(epochs), "batch_size": 32, "lr": 0.003},
        "search": {"sampler": "random", "trials": trials, "seed": seed, "trial_timeout": 300,
                   "early_stopping": {"enabled": early, "min_trials": 3, "fraction": 0.3, "min_epoch": 0}},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as warm:
        run_engine(start_run(parse_config(config(99, 1, 1, False), "<warm-up>"), "warm", None, Path(warm)),
                   progress=None)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            row = {}
            for early in ((False, True) if seed % 2 else (True, False)):
                cfg = parse_config(config(seed, args.trials, args.epochs, early), "<bench>")
                run = start_run(cfg, f"s{seed}-{'es' if early else 'full'}", None, Path(tmp))
                t0 = time.perf_counter()
                summary = run_engine(run, progress=None)
                wall = time.perf_counter() - t0
                trial_s = sum(t.user_attrs.get("seconds", 0.0) for t in run.study.get_trials())
                row[early] = (trial_s, wall, summary.pruned, summary.hypervolume)
            rows.append(row)
            (f0, w0, _, h0), (f1, w1, n1, h1) = row[False], row[True]
            print(f"seed {seed}: without: {f0:6.1f} s, hv {h0:.5g} | with: {f1:6.1f} s, {n1} stopped, hv {h1:.5g} "
                  f"| time x{f1 / f0:.2f}, hv x{h1 / h0 if h0 else float('nan'):.3f}", flush=True)
    t = np.array([[r[False][0], r[True][0]] for r in rows])
    h = np.array([[r[False][3], r[True][3]] for r in rows])
    print(f"\n{args.seeds} seeds x {args.trials} trials x {args.epochs} epochs: early stopping uses "
          f"{(t[:, 1] / t[:, 0]).mean():.2f} of the trial time (saves {100 * (1 - t[:, 1].sum() / t[:, 0].sum()):.0f}%), "
          f"final hypervolume x{(h[:, 1] / h[:, 0]).mean():.3f} (min x{(h[:, 1] / h[:, 0]).min():.3f})")


if __name__ == "__main__":
    main()
