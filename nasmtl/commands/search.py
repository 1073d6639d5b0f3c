"""``nasmtl search``: run (or resume) a multi-objective architecture search from a run config."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

NAME = "search"
HELP = "run or resume a multi-objective search (no CONFIG: the embedded MultiMNIST default)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, help="run config (TOML); omit for the default or to resume --name")
    p.add_argument("--name", help="run name: directory runs/NAME and study name (default: a timestamp)")
    p.add_argument("--storage", help="optuna storage: postgresql://..., sqlite:///..., or a journal file "
                                     "(default runs/NAME/study.journal)")
    p.add_argument("--trials", type=int, help="trial budget (overrides the config's search.trials)")
    p.add_argument("--seconds", type=float, help="wall-time budget of this invocation (overrides search.seconds)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run directories (default runs)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines or status line (errors still show)")
    p.add_argument("--no-final", action="store_true", help="skip the final training of the finalists and baselines "
                                                           "when the search ends (`nasmtl retrain` does it later)")


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from nasmtl.errors import CommandError
    from nasmtl.config import default_config, load_config
    from nasmtl.progress import Progress
    from nasmtl.run.build import build_engine, run_engine, run_final_phase
    from nasmtl.run.lifecycle import check_run_name, discard_run, start_run
    from nasmtl.run.rundir import RunDir

    if args.trials is not None and args.trials < 1:
        raise CommandError("--trials must be >= 1")
    name = args.name
    cfg = None
    if args.config is not None:
        cfg = load_config(args.config)
    elif name is None or not (RunDir(args.runs / name).config_file.exists() or args.storage):
        cfg = default_config()
    if name is None:
        name = time.strftime("search-%Y%m%d-%H%M%S")
    check_run_name(name)
    signal.signal(signal.SIGTERM, _sigterm)
    fresh = not (args.runs / name).exists()
    prog = Progress(unit="trials", quiet=args.quiet)
    try:
        run_ = start_run(cfg, name, args.storage, args.runs)
        engine = build_engine(run_, args.trials, args.seconds, prog.say, prog)
    except BaseException:
        if fresh:
            discard_run(args.runs / name, args.storage, name)
        raise
    c = run_.config
    prog.total = args.trials if args.trials is not None else c.search.trials
    print(f"run {name}: {run_.dir} ({'resumed' if cfg is None else c.source}); sampler {c.search.sampler}; "
          f"objectives {', '.join(f'{o.name} ({o.direction[:3]})' for o in c.objectives)}", file=sys.stderr)
    summary = run_engine(run_, progress=prog.say, engine=engine)
    if summary.completed > 0 and not args.no_final:
        fin = Progress(unit="final models", quiet=args.quiet)
        run_final_phase(run_, progress=fin.say, status=fin, engine=engine)
    print(f"report: nasmtl report {run_.dir}", file=sys.stderr)
    return 0 if summary.completed > 0 else 1
