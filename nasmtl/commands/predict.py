"""``nasmtl predict FILE.onnx --predictor predictors/NAME.onnx``: predicted objectives of ONNX models.

Each model's own metadata (``nasmtl.onnx.metadata``: design, tasks, input, policy, metrics) is
printed with its prediction, when the file has any.
"""

from __future__ import annotations

import argparse
import json
import time

from nasmtl.resources import shipped_path

NAME = "predict"
HELP = "predict objectives of ONNX models with a predictor (itself an ONNX file with a JSON card)"
DEFAULT_PREDICTOR = shipped_path("predictors/default.onnx")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE.onnx", help="ONNX model(s) to score")
    p.add_argument("--predictor", default=str(DEFAULT_PREDICTOR),
                   help="predictor file NAME.onnx with its card NAME.json (default predictors/default.onnx)")
    p.add_argument("--json", action="store_true", help="one JSON object per model")


def run(args: argparse.Namespace) -> int:
    from nasmtl.errors import CommandError
    from nasmtl.onnx.metadata import describe_metadata, read_metadata
    from nasmtl.predict.model import PredictorError, load_predictor

    from nasmtl.onnx import session

    for path in args.files:
        if not session(path).get_inputs():
            raise CommandError(f"{path}: the model has no graph inputs; a predictor scores models that take an input")
    try:
        pred = load_predictor(args.predictor)
        start = time.perf_counter()
        mean, std = pred.predict_onnx(args.files)
    except PredictorError as e:
        raise CommandError(str(e)) from None
    seconds = time.perf_counter() - start
    for path, m, s in zip(args.files, mean, std):
        meta = read_metadata(path)
        if args.json:
            print(json.dumps({"file": path, "predictor": str(args.predictor),
                              "encoding_version": pred.card["encoding_version"],
                              "predicted": {o: {"mean": float(a), "std": float(b)}
                                            for o, a, b in zip(pred.outputs, m, s)},
                              "metadata": meta}))
        else:
            cols = ", ".join(f"{o} {a:.3f} ± {b:.3f}" for o, a, b in zip(pred.outputs, m, s))
            print(f"{path}: {cols}")
            for line in describe_metadata(meta):
                print(f"  {line}")
    if not args.json:
        print(f"# {len(args.files)} model(s) encoded and scored in {seconds * 1000:.1f} ms "
              f"with {args.predictor} (trained on {_source(pred.card)})")
    return 0


def _source(card: dict) -> str:
    """Where a predictor's training data came from, in a few words."""
    data = card.get("training_data", {})
    if "table" in data:
        return str(data["table"])
    if "run" in data:
        return f"the trials of run {data['run']}"
    return "?"
