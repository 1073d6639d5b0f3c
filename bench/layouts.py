"""Layout search on MultiMNIST: which shared/branched layouts of a fixed backbone reach the Pareto front.

    python bench/layouts.py [--seeds 3] [--n-train 4000] [--n-val 1000] [--epochs 4] [--width 8]

A fixed 4-stage CNN; the search space is every layout of the two tasks (left, right digit) over
its 4 stages (5 layouts: all-shared, or the tasks branch at stage 3, 2, 1 or 0 = fully separate).
Each seed runs the search engine (evolution sampler, objectives left/right accuracy and MACs)
until every layout is trained, with that seed for weights and batches. The script prints, per
layout, MACs and params (whole network and per task), accuracies per seed and their mean, Δm
against the all-shared layout of the same seed, and the Pareto front of (mean accuracy, MACs)
over the seed-averaged results, marking whether each front member is all-shared, fully separate
or in between; ratios are against the all-shared baseline of the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from nasmtl.arch.ir import Arch, ArchBuilder
from nasmtl.arch.registry import Shape
from nasmtl.config import Objective
from nasmtl.data.delta_m import delta_m
from nasmtl.data.multimnist import multimnist
from nasmtl.search.engine import Engine, SearchBudget
from nasmtl.search.evaluate import ArchEvaluator
from nasmtl.search.pareto import pareto_indices
from nasmtl.search.samplers import make_proposer, make_sampler
from nasmtl.search.storage import open_storage
from nasmtl.spaces.joint import FixedArchSpace, JointSpace
from nasmtl.spaces.layout import LayoutSpace
from nasmtl.train import Budget, TrainConfig


def cnn4(input_shape: Shape, width: int) -> list[Arch]:
    """Four conv stages (widths w, 2w, 2w, 4w; downsampling after stages 0, 1 and 3)."""
    plan = [(width, True), (2 * width, True), (2 * width, False), (4 * width, True)]
    out, shape = [], tuple(input_shape)
    for w, pool in plan:
        b = ArchBuilder(shape)
        layers = [("conv", {"out": w, "k": 3}), ("batchnorm", {}), ("relu", {})]
        if pool:
            layers.append(("maxpool", {"k": 2, "stride": 2}))
        b.output("out", b.chain(b.input, layers))
        st = b.build()
        out.append(st)
        shape = st.shape(st.outputs["out"])
    return out


def kind(space: LayoutSpace, layout_str: str) -> str:
    if layout_str == space.encode(space.shared()):
        return "all-shared"
    if layout_str == space.encode(space.separate()):
        return "separate"
    return "branched"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--width", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = multimnist(n_train=args.n_train, n_val=args.n_val, n_test=100)
    tasks = list(data.task_names)
    layouts = LayoutSpace(tasks, 4)
    space = JointSpace(FixedArchSpace(f"cnn4-w{args.width}", lambda s: cnn4(s, args.width)), layouts)
    objectives = [Objective("left.accuracy", "maximize", ref=0.0), Objective("right.accuracy", "maximize", ref=0.0),
                  Objective("macs", "minimize", ref=1e9)]
    dirs = [o.direction for o in objectives]
    print(f"MultiMNIST n_train={args.n_train} n_val={args.n_val}; backbone cnn4 width {args.width}; "
          f"{int(layouts.size())} layouts of {len(tasks)} tasks over 4 stages; {args.epochs:g} epochs; "
          f"seeds 0..{args.seeds - 1}")
    results: dict[str, list[dict[str, float]]] = {}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        tc = TrainConfig(budget=Budget(epochs=args.epochs), batch_size=32, lr=0.003, seed=seed)
        ev = ArchEvaluator(space, data, [o.name for o in objectives], tc, seconds=None, latency_runs=0, seed=seed)
        with tempfile.TemporaryDirectory(prefix="nasmtl-bench-layouts-") as tmp:
            study = optuna.create_study(directions=dirs, sampler=make_sampler("evolution", seed),
                                        storage=open_storage(None, Path(tmp)))
            eng = Engine(study, space, ev, objectives, make_proposer("evolution", space, dirs, seed, population=4),
                         Path(tmp), SearchBudget(trials=int(layouts.size())),
                         progress=lambda line: print(f"  seed {seed} {line}", file=sys.stderr, flush=True))
            summary = eng.run()
            for t in study.get_trials():
                if t.state.name != "COMPLETE" or "duplicate_of" in t.user_attrs:
                    continue
                lay = t.user_attrs["design"].split(";layout=")[1]
                vals = {k[len("value:"):]: v for k, v in t.user_attrs.items() if k.startswith("value:")}
                results.setdefault(lay, []).append(vals)
        print(f"seed {seed}: {summary.completed} trained, {summary.duplicates} duplicate proposals, "
              f"{time.perf_counter() - t0:.0f} s so far")
    shared_key = layouts.encode(layouts.shared())
    rows = []
    for lay, runs in results.items():
        accs = [(r["left.accuracy"] + r["right.accuracy"]) / 2 for r in runs]
        ref_runs = results[shared_key]
        dms = [delta_m(r, {k: s[k] for k in ("left.accuracy", "right.accuracy")}) for r, s in zip(runs, ref_runs)]
        rows.append({"layout": lay, "kind": kind(layouts, lay), "macs": runs[0]["macs"], "params": runs[0]["params"],
                     "task_macs": runs[0]["left.macs"], "accs": accs, "mean": float(np.mean(accs)),
                     "dm": float(np.mean(dms))})
    rows.sort(key=lambda r: r["macs"])
    on_front = pareto_indices([[r["mean"], r["macs"]] for r in rows], ["maximize", "minimize"])
    front = {rows[i]["layout"] for i in on_front}
    base = next(r for r in rows if r["layout"] == shared_key)
    print(f"\n{'layout':44s} {'kind':10s} {'MACs':>10s} {'params':>8s} {'MACs/task':>10s} "
          f"{'mean acc per seed':>20s} {'mean':>6s} {'Δm %':>6s} {'MACs x':>7s} front")
    for r in rows:
        per_seed = " ".join(f"{a:.3f}" for a in r["accs"])
        print(f"{r['layout']:44s} {r['kind']:10s} {r['macs']:10.0f} {r['params']:8.0f} {r['task_macs']:10.0f} "
              f"{per_seed:>20s} {r['mean']:6.3f} {r['dm']:+6.2f} {r['macs'] / base['macs']:7.2f} "
              f"{'*' if r['layout'] in front else ''}")
    members = [r for r in rows if r["layout"] in front]
    middle = [r for r in members if r["kind"] == "branched"]
    print(f"\nPareto front of (mean accuracy, MACs): {len(members)} layout(s); "
          f"{len(middle)} neither all-shared nor fully separate")
    for r in members:
        print(f"  {r['layout']:44s} {r['kind']:10s} mean acc {r['mean']:.3f} ({r['mean'] - base['mean']:+.3f} vs "
              f"all-shared), MACs {r['macs'] / base['macs']:.2f}x all-shared")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
