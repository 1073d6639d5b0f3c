"""``nasmtl report``: Pareto table, plots and an HTML page of a run (or one JSON object)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "report"
HELP = "Pareto table, plots (PNG) and a self-contained HTML page of a search run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory (runs/NAME)")
    p.add_argument("--storage", help="storage URL (default: the one recorded in the run directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object (completed, failed, hypervolume, "
                                                       "pareto) instead of the table")


def run(args: argparse.Namespace) -> int:
    from nasmtl.report import write_report

    rep, files = write_report(args.run_dir, args.storage)
    if args.json:
        print(json.dumps(rep.to_json()))
        return 0
    print(f"run {rep.name}: {rep.completed} completed, {rep.failed} failed, {rep.pruned} stopped early; "
          f"hypervolume {rep.hypervolume:.6g}")
    print(f"Pareto front ({len(rep.pareto)}):")
    print(rep.table())
    print(rep.final_table() or "no final training yet: nasmtl retrain RUN --pareto --with-baselines")
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0
