"""``nasmtl worker``: join a running study (config read from the storage) and run its trials."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

NAME = "worker"
HELP = "join a running search study from this process or machine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study (run) name")
    p.add_argument("--storage", required=True, help="storage URL of the study (postgresql://..., sqlite:///..., "
                                                    "or a journal file)")
    p.add_argument("--trials", type=int, help="shared trial budget (default: the study's config)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run directories (default runs)")


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from nasmtl.run.worker import run_worker

    signal.signal(signal.SIGTERM, _sigterm)
    summary = run_worker(args.name, args.storage, args.runs, args.trials)
    return 0 if summary.completed > 0 else 1
