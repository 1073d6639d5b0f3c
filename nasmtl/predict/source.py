"""Transferred sources: a predictor trained on another task's results, scoring this search's designs.

A :class:`SourceScorer` maps designs to one predicted objective of a *source* task, for
``PredictorStrategy(source=...)``: the shipped ``predictors/nb201-imagenet16.onnx`` (1,000
NAS-Bench-201 cells' ImageNet16-120 validation accuracy, ONNX graph features) steers the
``predictor-from-imagenet16`` sampler of ``nasmtl bench``. A source must never be trained on the
search's own target data (a CIFAR-10 search may transfer from ImageNet16-120, not from CIFAR-10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nasmtl.predict.model import PredictorError, load_predictor
from nasmtl.resources import shipped_path

NB201_IMAGENET16 = shipped_path("predictors/nb201-imagenet16.onnx")
"""The shipped transfer source: NAS-Bench-201 ImageNet16-120 val_acc (see its card)."""


@dataclass
class SourceScorer:
    """Designs -> one predicted objective of the source task (higher = better), via feature rows."""

    predict: Callable[[np.ndarray], np.ndarray]
    """Feature rows (n, features) -> predicted means (n, outputs)."""
    featurizer: Callable[[Any], np.ndarray]
    output: int = 0
    name: str = ""

    def __call__(self, designs: Sequence[Any]) -> np.ndarray:
        if not designs:
            return np.zeros(0)
        return np.asarray(self.predict(np.stack([self.featurizer(d) for d in designs])))[:, self.output]


def onnx_source(path: str | Path, featurizer: Callable[[Any], np.ndarray], output: str | None = None) -> SourceScorer:
    """A source from a predictor file (run in onnxruntime); ``output`` names one of its outputs (default: the first)."""
    pred = load_predictor(path)
    outs = pred.outputs
    if output is not None and output not in outs:
        raise PredictorError(f"{path}: no output '{output}' (outputs: {', '.join(outs)})")
    idx = outs.index(output) if output is not None else 0
    return SourceScorer(lambda x: pred.predict_features(x)[0], featurizer, idx, f"{Path(path).name}:{outs[idx]}")


def nb201_imagenet16_source(space: Any, path: str | Path = NB201_IMAGENET16) -> SourceScorer:
    """The shipped ImageNet16-120 source for the NAS-Bench-201 cell space; needs the complete encoding cache."""
    from nasmtl.predict.strategy import default_featurizer

    if getattr(space, "name", None) != "nb201":
        raise PredictorError(f"{path}: scores NAS-Bench-201 cells only, not designs of space "
                             f"'{getattr(space, 'name', type(space).__name__)}'")
    featurizer, encoding = default_featurizer(space)
    if encoding != "onnx-graph (cached)":
        raise PredictorError(f"{path}: reads ONNX graph features; cache every NAS-Bench-201 cell first "
                             f"(python -m nasmtl.predict.data)")
    return onnx_source(path, featurizer)
