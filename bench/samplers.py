"""Hypervolume of each sampler on NAS-Bench-201 after 100 and 300 evaluations, as ratios to random search.

    python bench/samplers.py [--seeds 10] [--budget 300] [--dataset cifar10-valid] [--samplers ...]

Objectives: validation accuracy (maximise) and latency (minimise); hypervolume as a fraction of the
true front's (the runner normalises both by the table's range, reference 1.1). Prints mean, median
and spread over seeds at 100 and ``budget`` evaluations, and the ratio of each mean to random's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nasmtl.nasbench.runner import run_benchmark
from nasmtl.nasbench.table import load_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--dataset", default=None)
    p.add_argument("--objectives", default="val_acc,latency")
    p.add_argument("--samplers", default="random,evolution,nsga2,nsga3,tpe")
    args = p.parse_args()
    table = load_table("nb201")
    objectives = args.objectives.split(",")
    checkpoints = sorted({min(100, args.budget), args.budget})
    results: dict[str, dict[int, np.ndarray]] = {}
    for name in args.samplers.split(","):
        t0 = time.perf_counter()
        res = run_benchmark(table, name, args.budget, args.seeds, args.dataset, objectives)
        curves = np.array([r.curve for r in res.runs])
        results[name] = {c: curves[:, c - 1] for c in checkpoints}
        print(f"{name:10s} done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\nNAS-Bench-201 {res.dataset}, objectives {', '.join(objectives)}, {args.seeds} seeds; "
          "hypervolume fraction of the true front")
    base = results.get("random")
    for c in checkpoints:
        print(f"\nafter {c} evaluations:")
        print(f"  {'sampler':10s} {'mean':>7s} {'median':>7s} {'std':>7s} {'min':>7s} {'max':>7s} {'/random':>8s}")
        for name, r in results.items():
            v = r[c]
            ratio = v.mean() / base[c].mean() if base is not None else float("nan")
            print(f"  {name:10s} {v.mean():7.4f} {np.median(v):7.4f} {v.std():7.4f} {v.min():7.4f} "
                  f"{v.max():7.4f} {ratio:8.3f}")


if __name__ == "__main__":
    main()
