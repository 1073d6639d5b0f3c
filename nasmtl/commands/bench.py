"""``nasmtl bench``: run a search strategy against a real NAS benchmark table (a query is a lookup)."""

from __future__ import annotations

import argparse
import json
import time

NAME = "bench"
HELP = "measure a search strategy on a NAS benchmark table (nb201, nbgraph, nbgraph-proteins)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="benchmark table: nb201, nbgraph or nbgraph-proteins")
    p.add_argument("--sampler", default="random", help="search strategy (default random)")
    p.add_argument("--budget", type=int, default=100, help="table queries per seed (default 100)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds, 0..K-1 (default 10)")
    p.add_argument("--dataset", default=None, help="data set of the table (default: its first)")
    p.add_argument("--objectives", default="val_acc",
                   help="comma-separated metrics; 2-3 give multi-objective mode (e.g. val_acc,latency)")
    p.add_argument("--json", action="store_true", help="print one JSON object with per-seed curves")
    p.add_argument("--quiet", action="store_true", help="no status line")


def run(args: argparse.Namespace) -> int:
    from nasmtl.nasbench import BenchmarkError, BenchmarkUnavailable
    from nasmtl.nasbench.runner import run_benchmark
    from nasmtl.errors import CommandError
    from nasmtl.progress import Progress

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    start = time.perf_counter()
    prog = Progress(total=args.seeds, unit="seeds", quiet=args.quiet)
    finals: list[float] = []

    def on_seed(done: int, total: int, final: float) -> None:
        finals.append(final)
        best = min(finals) if len(objectives) == 1 else max(finals)
        prog.update(done, f"{'regret' if len(objectives) == 1 else 'hypervolume fraction'} {best:.4f}")

    try:
        res = run_benchmark(args.table, args.sampler, args.budget, args.seeds, args.dataset, objectives,
                            on_seed=on_seed)
    except (BenchmarkError, BenchmarkUnavailable) as e:
        raise CommandError(str(e)) from None
    finally:
        prog.close()
    seconds = time.perf_counter() - start
    if args.json:
        out = res.to_dict()
        out["seconds"] = seconds
        print(json.dumps(out))
        return 0
    single = len(res.objectives) == 1
    what = f"regret of {res.objectives[0]}" if single else "hypervolume fraction"
    print(f"{res.table}/{res.dataset}: sampler {res.sampler}, {res.budget} queries x {len(res.runs)} seeds, "
          f"objectives {', '.join(res.objectives)}")
    if single:
        print(f"table best {res.objectives[0]}: {res.reference['best']:.4f}")
    else:
        print(f"true front: {res.reference['front_size']} designs")
    for r in res.runs:
        extra = ""
        if single:
            extra = f"  chosen {r.chosen}"
            if r.chosen_test_acc is not None:
                extra += f" (test_acc {r.chosen_test_acc:.2f})"
        print(f"  seed {r.seed}: {what} {r.final:.4f}{extra}")
    s = res.summary
    print(f"{what}: mean {s['mean']:.4f}, median {s['median']:.4f}, std {s['std']:.4f}"
          + (f"; mean test_acc of chosen {s['mean_chosen_test_acc']:.2f}" if "mean_chosen_test_acc" in s else "")
          + f"  ({seconds:.1f} s)")
    return 0
