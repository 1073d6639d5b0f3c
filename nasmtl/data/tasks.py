"""Task kinds of a multi-task data set, each with its training loss and its evaluation metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

TaskKind = Literal["classification", "multilabel", "regression"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)

_PRIMARY = {"classification": "accuracy", "multilabel": "mean_f1", "regression": "r2"}


@dataclass(frozen=True)
class Task:
    """One prediction task: its name (the model's output key), kind and output width."""

    name: str
    kind: TaskKind
    n_outputs: int
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Reject unknown kinds and empty outputs early, where the task is declared."""
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r} (one of {', '.join(TASK_KINDS)})")
        if int(self.n_outputs) < 1:
            raise ValueError(f"task {self.name!r}: n_outputs must be >= 1, got {self.n_outputs}")
        if self.classes is not None and len(self.classes) != self.n_outputs:
            raise ValueError(f"task {self.name!r}: {len(self.classes)} class names for {self.n_outputs} outputs")

    @property
    def primary_metric(self) -> str:
        """The metric that ranks models on this task (higher is better)."""
        return _PRIMARY[self.kind]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch: cross-entropy, BCE on logits, or MSE, by kind."""
        if self.kind == "classification":
            return F.cross_entropy(pred, target.long())
        target = self._match(pred, target)
        if self.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))
        return F.mse_loss(pred, target.to(pred.dtype))

    def _match(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Target reshaped to the prediction's shape (e.g. (n,) vs (n, 1)), or a clear error."""
        if pred.shape == target.shape:
            return target
        if pred.numel() != target.numel():
            raise ValueError(f"task {self.name!r}: prediction shape {tuple(pred.shape)} "
                             f"does not match target shape {tuple(target.shape)}")
        return target.reshape(pred.shape)

    def metrics(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Evaluation metrics of raw model outputs (logits or values) against targets."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if self.kind == "classification":
            return {"accuracy": accuracy(pred, target)}
        if pred.size != target.size:
            raise ValueError(f"task {self.name!r}: prediction shape {pred.shape} does not match target shape {target.shape}")
        n = target.shape[0]
        pred = pred.reshape(n, -1)
        target = target.reshape(n, -1)
        if self.kind == "multilabel":
            hard = pred > 0
            truth = target > 0.5
            return {"mean_f1": mean_f1(hard, truth), "subset_accuracy": float(np.mean(np.all(hard == truth, axis=1)))}
        return {"r2": r2_score(pred, target), "mse": float(np.mean((pred.astype(np.float64) - target) ** 2))}


def accuracy(logits: np.ndarray, target: np.ndarray) -> float:
    """Fraction of rows whose arg-max class equals the target id."""
    if len(target) == 0:
        return float("nan")
    return float(np.mean(np.argmax(logits, axis=1) == target.reshape(-1)))


def mean_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """Macro F1 over labels; a label never present nor predicted counts as 1 (perfect agreement)."""
    pred = pred.astype(bool)
    truth = truth.astype(bool)
    tp = np.sum(pred & truth, axis=0).astype(np.float64)
    fp = np.sum(pred & ~truth, axis=0)
    fn = np.sum(~pred & truth, axis=0)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    return float(np.mean(f1))


def r2_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination averaged over output dims (a constant target scores 1 if hit, else 0)."""
    pred = pred.astype(np.float64)
    target = target.astype(np.float64)
    ss_res = np.sum((target - pred) ** 2, axis=0)
    ss_tot = np.sum((target - target.mean(axis=0)) ** 2, axis=0)
    safe = np.where(ss_tot > 0, ss_tot, 1.0)
    r2 = np.where(ss_tot > 0, 1.0 - ss_res / safe, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(r2))
