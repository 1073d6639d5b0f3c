"""Predictor models: a multi-output MLP ensemble in torch, exported to ONNX with a JSON card.

The ensemble is one module: feature normalisation (training mean/std, baked in as constants),
``members`` MLPs evaluated as batched matrix products, target de-normalisation, and two outputs
``mean`` and ``std`` (over members), each of shape (batch, outputs). Each member sees a bootstrap
resample of the training rows; targets may be NaN (an objective unknown for a row) and are then
left out of the loss. A predictor on disk is ``NAME.onnx`` plus ``NAME.json`` (the card: encoding
version, outputs, training data, held-out Kendall tau and Spearman per output, date, sha256).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn

from nasmtl.errors import NasmtlError
from nasmtl.files import write_json
from nasmtl.onnx.graph import OnnxError, PathLike
from nasmtl.predict.encoding import ENCODING_VERSION, FEATURE_NAMES, feature_vector

CARD_FORMAT = "nasmtl-predictor-1"
ONNX_ENCODING = "onnx-graph"
"""The ``encoding`` of predictors that read :func:`nasmtl.predict.encoding.feature_vector`."""


class PredictorError(NasmtlError, ValueError):
    """A predictor file or card that cannot be used; the message names the file and the problem."""


# ---- the ensemble --------------------------------------------------------------------------------


class EnsembleMLP(nn.Module):
    """``members`` MLPs over normalised features; ``forward(x) -> {"mean", "std"}`` in target units."""

    def __init__(self, n_in: int, n_out: int, members: int = 5, hidden: int = 64, layers: int = 2,
                 x_mean: np.ndarray | None = None, x_std: np.ndarray | None = None,
                 y_mean: np.ndarray | None = None, y_std: np.ndarray | None = None) -> None:
        super().__init__()
        dims = [n_in] + [hidden] * layers + [n_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            w = torch.empty(members, a, b)
            for k in range(members):
                nn.init.kaiming_uniform_(w[k].T, a=5 ** 0.5)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, b)))
        self.register_buffer("x_mean", torch.as_tensor(np.zeros(n_in) if x_mean is None else x_mean, dtype=torch.float32))
        self.register_buffer("x_std", torch.as_tensor(np.ones(n_in) if x_std is None else x_std, dtype=torch.float32))
        self.register_buffer("y_mean", torch.as_tensor(np.zeros(n_out) if y_mean is None else y_mean, dtype=torch.float32))
        self.register_buffer("y_std", torch.as_tensor(np.ones(n_out) if y_std is None else y_std, dtype=torch.float32))

    def members_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Per-member predictions in normalised target units: (members, batch, outputs)."""
        h = ((x - self.x_mean) / self.x_std).unsqueeze(0)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.matmul(h, w) + b
            if i < last:
                h = torch.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.members_normalised(x) * self.y_std + self.y_mean
        mean = p.mean(dim=0)
        std = torch.sqrt(((p - mean) ** 2).mean(dim=0))
        return {"mean": mean, "std": std}


def fit_ensemble(x: np.ndarray, y: np.ndarray, members: int = 5, hidden: int = 64, layers: int = 2,
                 steps: int = 400, lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
                 bootstrap: bool = True) -> EnsembleMLP:
    """Train an ensemble on rows ``x`` (n, features) and targets ``y`` (n, outputs; NaN = unknown)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError(f"need at least 2 training rows, got {len(x)}")
    xm, xs = x.mean(axis=0), x.std(axis=0)
    xs = np.where(xs > 1e-8, xs, 1.0)
    ym, ys = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
    ym, ys = np.nan_to_num(ym), np.where(np.isfinite(ys) & (ys > 1e-12), ys, 1.0)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = EnsembleMLP(x.shape[1], y.shape[1], members, hidden, layers, xm, xs, ym, ys)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yn = torch.as_tensor(np.nan_to_num((y - ym) / ys), dtype=torch.float32)
    mask = torch.as_tensor(np.isfinite(y), dtype=torch.float32)
    n = len(x)
    if bootstrap and members > 1:
        idx = torch.randint(0, n, (members, n), generator=gen)
        counts = torch.zeros(members, n).scatter_add_(1, idx, torch.ones(members, n))
    else:
        counts = torch.ones(members, n)
    wts = counts.unsqueeze(-1) * mask.unsqueeze(0)
    denom = wts.sum().clamp_min(1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        pred = net.members_normalised(xt)
        loss = (wts * (pred - yn) ** 2).sum() / denom
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net


def predict_torch(net: EnsembleMLP, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (batch, outputs) of a torch ensemble."""
    with torch.no_grad():
        out = net(torch.as_tensor(np.asarray(x, dtype=np.float32)))
    return out["mean"].numpy(), out["std"].numpy()


# ---- rank metrics --------------------------------------------------------------------------------


def _rankable(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The finite pairs of two vectors, or ``None`` where a rank correlation is undefined (under two
    pairs, or either side constant)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    return (a, b) if len(a) > 1 and np.ptp(a) > 0 and np.ptp(b) > 0 else None


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two vectors (NaN pairs dropped; NaN where undefined)."""
    from scipy.stats import kendalltau

    pairs = _rankable(a, b)
    return float("nan") if pairs is None else float(kendalltau(*pairs).statistic)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (NaN pairs dropped; NaN where undefined)."""
    from scipy.stats import spearmanr

    pairs = _rankable(a, b)
    return float("nan") if pairs is None else float(spearmanr(*pairs).statistic)


def rank_metrics(pred: np.ndarray, true: np.ndarray, outputs: Sequence[str]) -> dict[str, dict[str, float]]:
    """Kendall tau and Spearman per output column."""
    pred, true = np.asarray(pred).reshape(len(pred), -1), np.asarray(true).reshape(len(true), -1)
    return {o: {"kendall_tau": kendall_tau(pred[:, j], true[:, j]), "spearman": spearman(pred[:, j], true[:, j]),
                "n": int((np.isfinite(pred[:, j]) & np.isfinite(true[:, j])).sum())}
            for j, o in enumerate(outputs)}


# ---- files and cards -----------------------------------------------------------------------------


def card_path(path: PathLike) -> Path:
    """The card of a predictor file: ``NAME.json`` beside ``NAME.onnx``."""
    return Path(path).with_suffix(".json")


def save_predictor(net: EnsembleMLP, path: PathLike, outputs: Sequence[str], training_data: Mapping[str, Any],
                   metrics: Mapping[str, Mapping[str, float]], encoding: str = ONNX_ENCODING,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Export ``net`` to ``path`` (ONNX, parity-checked) and write its card; returns the card path."""
    from nasmtl.onnx import check_parity, export_onnx

    p = Path(path)
    if p.suffix != ".onnx":
        raise PredictorError(f"{p}: a predictor file must end in .onnx")
    n_in = int(net.x_mean.shape[0])
    export_onnx(net, (n_in,), p, ["mean", "std"])
    probe = np.random.default_rng(0).normal(size=(16, n_in)).astype(np.float32) * net.x_std.numpy() + net.x_mean.numpy()
    check_parity(net, p, probe, atol=1e-3, rtol=1e-5)
    card = {
        "format": CARD_FORMAT,
        "name": p.stem,
        "encoding": encoding,
        "encoding_version": ENCODING_VERSION if encoding == ONNX_ENCODING else encoding,
        "n_features": n_in,
        "features_sha256": _names_hash(FEATURE_NAMES) if encoding == ONNX_ENCODING else None,
        "outputs": list(outputs),
        "model": {"kind": "mlp-ensemble", "members": int(net.weights[0].shape[0]),
                  "hidden": int(net.weights[0].shape[2]), "layers": len(net.weights) - 1,
                  "onnx_outputs": {"mean": "ensemble mean (batch, outputs)", "std": "ensemble std (batch, outputs)"}},
        "training_data": dict(training_data),
        "held_out": {o: dict(v) for o, v in metrics.items()},
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "onnx_sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
    }
    if extra:
        card.update(extra)
    cp = card_path(p)
    write_json(cp, card, indent=2)
    return cp


def _names_hash(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


@dataclass
class Predictor:
    """A loaded predictor: its card and an onnxruntime session; scores feature rows or ONNX models."""

    path: Path
    card: dict[str, Any]
    session: Any = field(repr=False)

    @property
    def outputs(self) -> list[str]:
        """Names of the predicted objectives."""
        return list(self.card["outputs"])

    def predict_features(self, x: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (rows, outputs) for feature rows, run in onnxruntime in batches."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.card["n_features"]:
            raise PredictorError(f"{self.path}: expects rows of {self.card['n_features']} features, got shape {x.shape}")
        means, stds = [], []
        for s in range(0, len(x), batch_size):
            m, sd = self.session.run(["mean", "std"], {"input": x[s:s + batch_size]})
            means.append(m)
            stds.append(sd)
        if not means:
            k = len(self.outputs)
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.float32)
        return np.concatenate(means), np.concatenate(stds)

    def predict_onnx(self, models: Sequence[PathLike | onnx.ModelProto | bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Encode ONNX models (files, ModelProtos or bytes) and score them in one batch."""
        if self.card["encoding"] != ONNX_ENCODING:
            raise PredictorError(f"{self.path}: reads '{self.card['encoding']}' encodings, not ONNX graphs")
        return self.predict_features(np.stack([feature_vector(m) for m in models]))


def load_predictor(path: PathLike) -> Predictor:
    """Open a predictor file and its card; every problem is one PredictorError naming the file."""
    from nasmtl.onnx import session

    p = Path(path)
    if not p.is_file():
        raise PredictorError(f"{p}: predictor file not found")
    cp = card_path(p)
    if not cp.is_file():
        raise PredictorError(f"{p}: card {cp.name} missing (a predictor is NAME.onnx plus NAME.json)")
    try:
        card = json.loads(cp.read_text())
    except json.JSONDecodeError as e:
        raise PredictorError(f"{cp}: line {e.lineno}: card is not valid JSON ({e.msg})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise PredictorError(f"{cp}: not a predictor card (format must be {CARD_FORMAT!r})")
    for key in ("encoding", "encoding_version", "n_features", "outputs"):
        if key not in card:
            raise PredictorError(f"{cp}: card lacks '{key}'")
    if card["encoding"] == ONNX_ENCODING:
        if card["encoding_version"] != ENCODING_VERSION:
            raise PredictorError(f"{cp}: encoding version '{card['encoding_version']}' does not match this nasmtl's "
                                 f"'{ENCODING_VERSION}'; retrain the predictor")
        if card.get("features_sha256") not in (None, _names_hash(FEATURE_NAMES)):
            raise PredictorError(f"{cp}: feature list differs from this nasmtl's encoding; retrain the predictor")
    digest = card.get("onnx_sha256")
    if digest and hashlib.sha256(p.read_bytes()).hexdigest() != digest:
        raise PredictorError(f"{p}: file does not match the sha256 in its card {cp.name} (corrupt or replaced)")
    try:
        sess = session(p)
    except OnnxError as e:
        raise PredictorError(str(e)) from None
    ins = sess.get_inputs()
    names = {o.name for o in sess.get_outputs()}
    if len(ins) != 1 or ins[0].shape[-1] != card["n_features"] or not {"mean", "std"} <= names:
        raise PredictorError(f"{p}: graph must take one input of {card['n_features']} features and give "
                             f"'mean' and 'std' outputs")
    return Predictor(p, card, sess)
