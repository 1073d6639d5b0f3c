"""``nasmtl retrain``: train a found design from scratch at the final budget, export it and measure it on the test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "retrain"
HELP = "train a trial's design (or every Pareto member, or the baselines) from scratch at the final budget"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory (runs/NAME)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number")
    which.add_argument("--pareto", action="store_true", help="every Pareto member of the run")
    which.add_argument("--baselines", action="store_true", help="only the run's baselines ([search] baselines)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, help="training epochs (default: the run's [final] budget)")
    budget.add_argument("--steps", type=int, help="training steps (default: the run's [final] budget)")
    p.add_argument("--batch-size", type=int, help="batch size (default: [final], else [train])")
    p.add_argument("--lr", type=float, help="learning rate (default: [final], else [train])")
    from nasmtl.config import LR_SCHEDULES

    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="learning-rate schedule (default: [final], else [train])")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's [train] device)")
    p.add_argument("--with-baselines", action="store_true", help="also train the baselines at the same budget")
    p.add_argument("--force", action="store_true", help="train again even when a record of this budget exists")
    p.add_argument("--storage", help="storage URL (default: the one recorded in the run directory)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("-o", "--output", type=Path, help="with --trial: copy the trained ONNX file here")


def run(args: argparse.Namespace) -> int:
    from nasmtl.errors import CommandError
    from nasmtl.search.engine import pareto_trials
    from nasmtl.search.final import copy_model, final_budget, run_final
    from nasmtl.progress import Progress
    from nasmtl.run.lifecycle import open_run
    from nasmtl.run.rundir import RunDir
    from nasmtl.train import DeviceError, resolve_device

    if args.output is not None and args.trial is None:
        raise CommandError("-o/--output needs --trial (with --pareto or --baselines the files stay in the run's final/)")
    files = RunDir(args.run_dir)
    if not files.is_run():
        raise CommandError(f"{args.run_dir}: not a run directory (no {files.run_file.name})")
    run_ = open_run(args.run_dir, args.storage)
    cfg = run_.config
    budget = final_budget(cfg, args.epochs, args.steps, args.batch_size, args.lr, args.lr_schedule)
    device = None
    if args.device is not None:
        try:
            device = str(resolve_device(args.device))
        except DeviceError as e:
            raise CommandError(f"--device: {e}") from None
    trials = run_.study.get_trials(deepcopy=False)
    if args.trial is not None:
        done = {t.number: t for t in trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs}
        if args.trial not in done:
            have = ", ".join(map(str, sorted(done))) or "none"
            state = next((t.state.name.lower() for t in trials if t.number == args.trial), None)
            why = f"is {state}" if state else "does not exist"
            raise CommandError(f"{args.run_dir}: trial {args.trial} {why} (completed trials: {have})")
        chosen = [done[args.trial]]
    elif args.pareto:
        chosen = pareto_trials(trials, cfg.directions)
        if not chosen:
            raise CommandError(f"{args.run_dir}: the run has no Pareto members yet")
    else:
        chosen = []
    prog = Progress(unit="models", quiet=args.quiet)
    records = run_final(run_.dir, cfg, chosen, with_baselines=args.baselines or args.with_baselines, budget=budget,
                        device=device, force=args.force, progress=prog.say, status=prog)
    for rec in records:
        shown = ", ".join(f"{o.name} {rec.test[o.name]:.4g}" for o in cfg.objectives if o.name in rec.test)
        print(f"{rec.name}: test {shown}; {rec.steps} steps in {rec.train_seconds:.0f} s; {run_.dir / rec.onnx}")
    if args.output is not None:
        copy_model(records[0], run_.dir, args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
