"""Found models against hand-designed baselines, all trained to completion with the same budget and data (test split).

    python bench/found_vs_baseline.py [--data multimnist|penguins] [--seeds 0,1,2] [--trials N] [--runs DIR]
    python bench/found_vs_baseline.py --report RUN_DIR ...     # reprint finished runs
    python bench/found_vs_baseline.py --refinal RUN_DIR ...    # the final phase again, with today's finalist rule

For each seed, runs the search exactly as ``nasmtl search`` does (multi-fidelity trials, then the
final phase: the finalists chosen from the front and the run's baselines trained from scratch at
the final budget, measured in onnxruntime on the test split), then prints every final model's test
figures side by side and, for the hand design (as designed in fp32, and all int8), the found model
that beats it with the smallest file (at least as good on every task; where none is, the found
model with the best summed task metrics): the accuracy difference per task and the ratio of bytes and
latency found / hand. ``--refinal`` copies finished runs to ``RUN_DIR-refinal``, keeps the final
records of the baselines and of the trials that are still finalists under the current selection
rule, and trains the other finalists (final training is seeded and deterministic on the CPU, so a
kept record is what a fresh final phase would write). The aim: a found model at least as good on every task objective at no more
than half the hand design's bytes, in every seed.

Data sets:
- ``multimnist``: the embedded default of ``nasmtl search`` (seed = ``[search] seed``); hand design:
  the two-branch CNN of ``nasmtl.examples`` (the ``nasmtl train-example`` network).
- ``penguins``: the Palmer penguins (344 birds, from the ``palmerpenguins`` package's CSV file; the 11
  rows with a missing value dropped), read through the documented CSV loader with ``standardize``:
  features bill length, bill depth and flipper length; tasks species (3 classes), sex (2 classes)
  and body mass (regression); objectives sex accuracy, body mass R² and bytes; the MLP grammar with
  layout and quantization co-searched, started from the hand design written in it; hand design: the
  shared two-layer MLP. The seed also draws the train/val/test split (60/20/20).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasmtl.config import RunConfig, default_config, parse_config  # noqa: E402

AIM_BYTES = 0.5
HAND_MLP = "seq(seq(linear(out=64),seq(batchnorm,relu)),seq(linear(out=64),seq(batchnorm,relu)))"
"""The shared MLP of ``nasmtl.examples.shared_mlp`` written in ``grammars/mlp.lark`` (the penguins search's start)."""


def multimnist_config(seed: int, trials: int | None) -> RunConfig:
    """The embedded default run with another search seed."""
    cfg = default_config()
    cfg.search.seed = seed
    if trials is not None:
        cfg.search.trials = trials
    return cfg


def penguins_csv(folder: Path) -> Path:
    """The palmerpenguins package's CSV with the rows that miss a value dropped, written into ``folder``."""
    import importlib.resources

    try:
        text = (importlib.resources.files("palmerpenguins") / "data" / "penguins.csv").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise SystemExit("the penguins data set needs the palmerpenguins package: pip install -e \".[bench]\"")
    lines = text.splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and "NA" not in ln.split(",")]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "penguins.csv"
    out.write_text("\n".join(keep) + "\n", encoding="utf-8")
    return out


def penguins_config(seed: int, trials: int | None, folder: Path) -> RunConfig:
    """The penguins run: the CSV loader, the MLP grammar, layout and quantization co-searched."""
    table = {
        "data": {"kind": "csv", "path": str(penguins_csv(folder)), "standardize": True, "seed": seed,
                 "features": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"],
                 "tasks": {"species": "classification", "sex": "classification", "body_mass_g": "regression"},
                 "val_fraction": 0.2, "test_fraction": 0.2},
        "space": {"grammar": str(ROOT / "grammars" / "mlp.lark"), "layout": "search",
                  "quant": str(ROOT / "search_spaces" / "quant.toml")},
        "objectives": [{"name": "sex.accuracy", "direction": "maximize", "bound": 0.55, "ref": 0.0},
                       {"name": "body_mass_g.r2", "direction": "maximize", "bound": 0.0, "ref": 0.0},
                       {"name": "bytes", "direction": "minimize", "ref": 200_000}],
        "train": {"steps": 270, "batch_size": 32, "lr": 0.003, "device": "cpu"},
        "search": {"sampler": "evolution", "trials": trials or 40, "seed": seed, "population": 8,
                   "trial_timeout": 120, "baselines": ["auto"], "start": [HAND_MLP]},
        "final": {"steps": 600, "members": 3},
    }
    return parse_config(table, "<bench penguins>", str(folder))


def run_search(cfg: RunConfig, name: str, runs: Path) -> Path:
    """The search and its final phase, as ``nasmtl search`` runs them; returns the run directory."""
    from nasmtl.run.build import run_engine, run_final_phase
    from nasmtl.run.lifecycle import start_run

    run = start_run(cfg, name, None, runs)
    summary = run_engine(run, progress=None)
    if summary.completed:
        run_final_phase(run, progress=lambda line: print("  " + line, file=sys.stderr, flush=True))
    return run.dir


def refinal(src: Path) -> Path:
    """A copy of the finished run ``src`` whose final phase is redone with the current finalist rule."""
    import shutil

    from nasmtl.run.build import finalists, run_final_phase
    from nasmtl.run.lifecycle import open_run

    dest = src.with_name(src.name + "-refinal")
    if dest.exists():
        raise SystemExit(f"{dest} exists already: remove it to redo the final phase")
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("report", "report.html"))
    run = open_run(dest)
    keep = {f"trial-{t.number:05d}" for t in finalists(run)}
    for rec in sorted((dest / "final").glob("*/trial-*")):
        if rec.name.split(".")[0] not in keep:
            rec.unlink()
    run_final_phase(run, progress=lambda line: print("  " + line, file=sys.stderr, flush=True))
    return dest


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def report_seed(run_dir: Path, hand: str) -> list[bool]:
    """Print one seed's final models and the comparison with the hand design; whether the aim is met per variant."""
    from nasmtl.report import load_report
    from nasmtl.search.final import task_objectives

    rep = load_report(run_dir)
    cfg_objs = _objectives(run_dir)
    quality = task_objectives(cfg_objs)
    cols = rep.final_columns()
    print(f"  {'model':24s} " + " ".join(f"{c:>15s}" for c in cols))
    for label, v in rep.final_rows():
        print(f"  {label:24s} " + " ".join(f"{_fmt(v[c]) if c in v else '-':>15s}" for c in cols))
    found = [(f"trial {r.trial}", r.test) for r in rep.final if r.kind == "found"]
    met = []
    for label, base in rep.final_rows():
        if label not in (hand, f"{hand} int8"):
            continue
        better = [(n, v) for n, v in found if all(_no_worse(v, base, o) for o in quality)]
        ok = [(n, v) for n, v in better if v["bytes"] <= AIM_BYTES * base["bytes"]]
        pick = min(ok or better, key=lambda nv: nv[1]["bytes"]) if better else max(
            found, key=lambda nv: sum(nv[1][o.name] for o in quality))
        n, v = pick
        diffs = ", ".join(f"{o.name} {100 * (v[o.name] - base[o.name]):+.1f} points" if "accuracy" in o.name
                          else f"{o.name} {v[o.name] - base[o.name]:+.3f}" for o in quality)
        lat = f"latency {v['latency_ms'] / base['latency_ms']:.2f}x" if "latency_ms" in v and base.get("latency_ms") \
            else ""
        print(f"  vs {label}: {n}: {diffs}; bytes {v['bytes'] / base['bytes']:.3f}x, {lat}; "
              f"aim (>= every task at <= {AIM_BYTES}x bytes) {'MET' if ok else 'not met'}")
        met.append(bool(ok))
    return met


def _objectives(run_dir: Path) -> list:
    from nasmtl.run.lifecycle import open_run

    return open_run(run_dir).config.objectives


def _no_worse(v: dict, base: dict, o: object) -> bool:
    f, b = v[o.name], base[o.name]
    return f >= b if o.direction == "maximize" else f <= b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["multimnist", "penguins"], default="multimnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, help="trial budget of each search (default: the run's own)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder for the run directories")
    ap.add_argument("--report", type=Path, nargs="+", help="only print the comparison of finished run directories")
    ap.add_argument("--refinal", type=Path, nargs="+", help="redo the final phase of finished runs (copies)")
    args = ap.parse_args()
    hand = "two-branch-cnn" if args.data == "multimnist" else "shared-mlp"
    results = []
    for run_dir in args.report or []:
        print(f"{run_dir}:")
        results.append(report_seed(run_dir, hand))
    for src in args.refinal or []:
        t0 = time.perf_counter()
        run_dir = refinal(src)
        print(f"{run_dir} (from {src}; {time.perf_counter() - t0:.0f} s of final training):")
        results.append(report_seed(run_dir, hand))
    for seed in [] if args.report or args.refinal else [int(s) for s in args.seeds.split(",")]:
        name = f"bench-found-{args.data}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = multimnist_config(seed, args.trials) if args.data == "multimnist" else \
            penguins_config(seed, args.trials, args.runs / f"{name}-data")
        t0 = time.perf_counter()
        run_dir = run_search(cfg, name, args.runs)
        print(f"seed {seed}: {run_dir} ({time.perf_counter() - t0:.0f} s, search and final training)")
        results.append(report_seed(run_dir, hand))
    fp32 = sum(r[0] for r in results if r)
    int8 = sum(r[1] for r in results if len(r) > 1)
    print(f"aim met against {hand} (fp32) in {fp32} of {len(results)} seeds; against {hand} int8 in {int8} of "
          f"{len(results)}")


if __name__ == "__main__":
    main()
