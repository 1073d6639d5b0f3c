"""Task embeddings and task similarity, cheap enough to compute in seconds on a CPU.

Three kinds, by what is known about a task:

- ``probe`` (raw data at hand: MultiMNIST, user npz/csv): data meta-features plus the statistics of
  one fixed small probe network (inputs pooled to at most 256 features, a 32-unit ReLU layer with
  weights from a fixed seed, one head per task) trained briefly with SGD. Following Task2Vec, the
  task is described by the diagonal Fisher information of the probe's hidden layer (per unit,
  sorted, so inputs of any size compare), with the probe's loss drop and accuracy over chance.
  Pure numpy, deterministic, about a second.
- ``anchor`` (only results, as in benchmark tables): the task's scores on a small fixed set of
  anchor designs, rank-normalised (AutoTransfer's idea: a task is known by how it ranks a few
  fixed models). Anchors are designs scored on every bank task of the space, chosen at evenly
  spaced quantiles of their mean rank, so they span good and bad designs. A new task pays for its
  anchors with K evaluations, which also count as search evaluations.
- ``effect`` (results without shared designs, like the GraphGym bank): for every decision option,
  the mean percentile of the task's designs that take it, centred (how much each choice helps).

Similarity between two embeddings of one kind is the cosine of the centred vectors, that is
Pearson correlation; on rank-normalised anchors it is Spearman's rank correlation.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from nasmtl.errors import NasmtlError
from nasmtl.priors.bank import Record, percentiles

PROBE_INPUTS = 256
PROBE_HIDDEN = 32
PROBE_EXAMPLES = 1024
PROBE_STEPS = 80
PROBE_SEED = 1234


class EmbeddingError(NasmtlError, ValueError):
    """A task that cannot be embedded (no examples, anchors missing from its results)."""


# ---- similarity -----------------------------------------------------------------------------


def similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of the centred vectors (Pearson correlation), in [-1, 1]; 0 when either is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise EmbeddingError(f"embeddings of different lengths: {len(x)} and {len(y)}")
    x, y = x - x.mean(), y - y.mean()
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0 or ny == 0:
        return 0.0
    return float(np.clip(x @ y / (nx * ny), -1.0, 1.0))


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences."""
    return similarity(percentiles(a), percentiles(b))


# ---- anchor embedding -----------------------------------------------------------------------


def scores_by_task(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """``{task: {design: score}}`` (the best score where a design appears twice in a task)."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        d = out.setdefault(r.task, {})
        if r.design not in d or r.score > d[r.design]:
            d[r.design] = r.score
    return out


def choose_anchors(scores: Mapping[str, Mapping[str, float]], k: int = 10) -> list[str]:
    """``k`` designs scored on every task, at evenly spaced quantiles of their mean percentile across tasks."""
    tasks = list(scores)
    if not tasks:
        raise EmbeddingError("no tasks to choose anchor designs from")
    common = sorted(set.intersection(*(set(scores[t]) for t in tasks)))
    if len(common) < k:
        raise EmbeddingError(f"only {len(common)} designs are scored on all {len(tasks)} tasks; need {k} anchors")
    mean_pct = np.mean([percentiles([scores[t][d] for d in common]) for t in tasks], axis=0)
    order = np.argsort(mean_pct, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(common) - 1, k)).astype(int))
    return [common[int(order[i])] for i in picks]


def anchor_embedding(scores: Mapping[str, float], anchors: Sequence[str]) -> np.ndarray:
    """The task's scores on ``anchors``, rank-normalised to [-1, 1]."""
    missing = [a for a in anchors if a not in scores]
    if missing:
        raise EmbeddingError(f"{len(missing)} anchor design(s) have no score on this task, e.g. {missing[0]!r}")
    return 2.0 * percentiles([scores[a] for a in anchors]) - 1.0


# ---- effect embedding -----------------------------------------------------------------------


def decision_options(records: Sequence[Record]) -> dict[str, list[str]]:
    """Every decision key and the options seen for it in ``records`` (sorted)."""
    opts: dict[str, set[str]] = {}
    for r in records:
        for k, v in r.choices.items():
            opts.setdefault(k, set()).add(v)
    return {k: sorted(v) for k, v in sorted(opts.items())}


def effect_embedding(records: Sequence[Record], options: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Per (decision, option): mean percentile of the task's designs taking it, minus 0.5 (0 when unseen)."""
    if not records:
        raise EmbeddingError("no records to embed")
    pct = percentiles([r.score for r in records])
    vec = []
    for k, opts in options.items():
        for o in opts:
            sel = [p for r, p in zip(records, pct) if r.choices.get(k) == o]
            vec.append(float(np.mean(sel)) - 0.5 if sel else 0.0)
    return np.array(vec)


# ---- probe embedding ------------------------------------------------------------------------


def _features(x: np.ndarray) -> np.ndarray:
    """Inputs as at most ``PROBE_INPUTS`` standardised features (images block-averaged, then a fixed projection)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4:
        n, c, h, w = x.shape
        f = max(1, math.ceil(math.sqrt(h * w * c / PROBE_INPUTS)))
        hh, ww = h // f * f or h, w // f * f or w
        x = x[:, :, :hh, :ww]
        if f > 1 and hh >= f and ww >= f:
            x = x.reshape(n, c, hh // f, f, ww // f, f).mean(axis=(3, 5))
    x = x.reshape(len(x), -1)
    if x.shape[1] > PROBE_INPUTS:
        proj = np.random.default_rng(PROBE_SEED + 1).standard_normal((x.shape[1], PROBE_INPUTS)) / math.sqrt(x.shape[1])
        x = x @ proj
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 1e-8, sd, 1.0)


def _targets(task: Any, y: np.ndarray) -> tuple[np.ndarray, str]:
    if task.kind == "classification":
        t = np.zeros((len(y), task.n_outputs))
        t[np.arange(len(y)), np.asarray(y, dtype=int)] = 1.0
        return t, "softmax"
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if task.kind == "multilabel":
        return y, "sigmoid"
    sd = y.std(axis=0)
    return (y - y.mean(axis=0)) / np.where(sd > 1e-8, sd, 1.0), "linear"


def _head(z: np.ndarray, link: str) -> np.ndarray:
    if link == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    if link == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def _loss(p: np.ndarray, t: np.ndarray, link: str) -> float:
    if link == "softmax":
        return float(-np.mean(np.sum(t * np.log(p + 1e-12), axis=1)))
    if link == "sigmoid":
        return float(-np.mean(t * np.log(p + 1e-12) + (1 - t) * np.log(1 - p + 1e-12)))
    return float(np.mean((p - t) ** 2))


def probe_statistics(x: np.ndarray, task: Any, y: np.ndarray, steps: int = PROBE_STEPS) -> np.ndarray:
    """One task's probe vector: sorted, centred log Fisher of the hidden units, loss drop, gain over chance."""
    t, link = _targets(task, y)
    rng = np.random.default_rng(PROBE_SEED)
    w1 = rng.standard_normal((PROBE_INPUTS, PROBE_HIDDEN))[: x.shape[1]] * math.sqrt(2.0 / x.shape[1])
    w2 = np.random.default_rng(PROBE_SEED + 2).standard_normal((PROBE_HIDDEN, t.shape[1])) / math.sqrt(PROBE_HIDDEN)
    lr, batch = 0.05, 128
    order = np.random.default_rng(PROBE_SEED + 3)

    def forward(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = xb @ w1
        h = np.maximum(a, 0.0)
        return a, h, _head(h @ w2, link)

    loss0 = _loss(forward(x)[2], t, link)
    for _ in range(steps):
        idx = order.integers(0, len(x), size=min(batch, len(x)))
        xb, tb = x[idx], t[idx]
        a, h, p = forward(xb)
        g = (p - tb) / len(xb)
        gw2 = h.T @ g
        gh = (g @ w2.T) * (a > 0)
        w1 -= lr * (xb.T @ gh)
        w2 -= lr * gw2
    a, h, p = forward(x)
    loss1 = _loss(p, t, link)
    delta = (p - t) @ w2.T * (a > 0)
    fisher = np.mean((x ** 2).sum(axis=1, keepdims=True) * delta ** 2, axis=0)
    spectrum = np.sort(np.log(fisher + 1e-12))[::-1]
    spectrum = spectrum - spectrum.mean()
    if link == "softmax":
        acc = float(np.mean(p.argmax(axis=1) == t.argmax(axis=1)))
        gain = (acc - 1.0 / t.shape[1]) / (1.0 - 1.0 / t.shape[1])
        freq = t.mean(axis=0)
        entropy = float(-(freq * np.log(freq + 1e-12)).sum() / math.log(max(2, t.shape[1])))
    else:
        gain = 1.0 - loss1 / max(loss0, 1e-12)
        entropy = 1.0
    drop = math.log(max(loss0, 1e-12) / max(loss1, 1e-12))
    return np.concatenate([spectrum / max(1e-12, float(np.linalg.norm(spectrum))), [drop, gain, entropy]])


def probe_embedding(data: Any, tasks: Sequence[str] | None = None, n: int = PROBE_EXAMPLES) -> np.ndarray:
    """The ``probe`` embedding of a data set's ``tasks`` (default all): meta-features and the mean probe vector."""
    names = list(tasks) if tasks is not None else list(data.task_names)
    split = data.train
    if len(split) == 0:
        raise EmbeddingError(f"data set {data.name!r} has no training examples to probe")
    idx = np.random.default_rng(PROBE_SEED).permutation(len(split))[:n]
    x = _features(split.x[idx])
    per = [probe_statistics(x, data.task(t), np.asarray(split.y[t])[idx]) for t in names]
    kinds = [data.task(t).kind for t in names]
    meta = np.array([
        math.log10(len(split)) / 6.0,
        math.log10(max(1, int(np.prod(data.input_shape)))) / 6.0,
        len(names) / 10.0,
        sum(k == "classification" for k in kinds) / len(kinds),
        float(np.mean([math.log(max(2, data.task(t).n_outputs)) for t in names])) / 5.0,
        float(len(data.input_shape) == 3),
    ])
    return np.concatenate([meta, np.mean(per, axis=0)])


def bank_embeddings(records: Sequence[Record], kind: str, anchors: Sequence[str] | None = None,
                    options: Mapping[str, Sequence[str]] | None = None) -> dict[str, np.ndarray]:
    """Embeddings of every task of ``records`` (``anchor``: on ``anchors``; ``effect``: over ``options``)."""
    if kind == "anchor":
        by = scores_by_task(records)
        return {t: anchor_embedding(s, anchors or choose_anchors(by)) for t, s in by.items()}
    if kind == "effect":
        opts = options or decision_options(records)
        groups: dict[str, list[Record]] = {}
        for r in records:
            groups.setdefault(r.task, []).append(r)
        return {t: effect_embedding(rs, opts) for t, rs in groups.items()}
    raise EmbeddingError(f"unknown embedding kind {kind!r} (anchor, effect; probe needs the data)")
