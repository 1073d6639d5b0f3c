"""``nasmtl export``: copy a trial's trained ONNX model out of a run, after checking it runs in onnxruntime."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

NAME = "export"
HELP = "write a trial's trained model (ONNX) from a run directory, checked in onnxruntime"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory (runs/NAME)")
    p.add_argument("--trial", type=int, required=True, help="trial number")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from nasmtl.errors import CommandError
    from nasmtl.onnx import run_onnx, session
    from nasmtl.run.rundir import RunDir

    files = RunDir(args.run_dir)
    src = files.trial_onnx(args.trial)
    if not src.is_file():
        have = files.trials_with_models()
        raise CommandError(f"{args.run_dir}: no trained model of trial {args.trial} "
                           f"(trials with models: {', '.join(map(str, have)) or 'none'})")
    sess = session(src)
    shape = sess.get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) for d in shape):
        raise CommandError(f"{src}: input shape {shape} is not static")
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    out = run_onnx(sess, x)
    bad = [k for k, v in out.items() if not np.isfinite(v).all()]
    if bad:
        raise CommandError(f"{src}: outputs {', '.join(bad)} are not finite in onnxruntime")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rec = files.trial_record(args.trial)
    info = json.loads(rec.read_text()) if rec.is_file() else {}
    design = info.get("design")
    shutil.copyfile(src, args.output)
    _describe(args.run_dir, args.output, info)
    print(f"wrote {args.output} (trial {args.trial}; outputs {', '.join(out)}; runs in onnxruntime)"
          + (f"\ndesign: {design}" if design else ""), file=sys.stderr)
    return 0


def _describe(run_dir: Path, path: Path, info: dict) -> None:
    """Write the run's description of the model into the exported file (``nasmtl.onnx.metadata``)."""
    import json

    from nasmtl.config import RunConfig
    from nasmtl.data import load_dataset
    from nasmtl.onnx import model_metadata, write_metadata
    from nasmtl.run.rundir import RunDir

    cfg_file = RunDir(run_dir).config_file
    if not cfg_file.is_file():
        return
    cfg = RunConfig.from_dict(json.loads(cfg_file.read_text()), str(cfg_file))
    data = load_dataset(dict(cfg.data), cfg.base_dir)
    if cfg.tasks is not None:
        from dataclasses import replace

        data = replace(data, tasks=tuple(data.task(n) for n in cfg.tasks))
    design = info.get("design")
    policy = design.split(";quant=", 1)[1] if design and ";quant=" in design else None
    values = {k: v for k, v in (info.get("objectives") or {}).items() if isinstance(v, (int, float))}
    steps = f"{info['steps']} steps" if "steps" in info else "the search's trial budget"
    write_metadata(path, model_metadata(data, design, policy, {"split": "val", "budget": steps, "values": values}))
