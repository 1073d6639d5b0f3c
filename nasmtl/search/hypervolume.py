"""Exact hypervolume for 1 to 3 objectives, any mix of directions, against a fixed reference point."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nasmtl.search.pareto import pareto_indices, to_minimization


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], ref: Sequence[float],
                directions: Sequence[str] | None = None) -> float:
    """The volume dominated by ``points`` and bounded by ``ref`` (exact; 1 to 3 objectives).

    ``directions`` holds "minimize"/"maximize" per objective (default: all minimised). Points that
    are not strictly better than ``ref`` in every objective, or hold NaN/inf, add nothing.
    """
    r = np.asarray(ref, dtype=float).reshape(-1)
    m = len(r)
    if not 1 <= m <= 3:
        raise ValueError(f"hypervolume supports 1 to 3 objectives, got {m}")
    if not np.isfinite(r).all():
        raise ValueError(f"reference point must be finite, got {list(r)}")
    p = np.asarray(points, dtype=float).reshape(-1, m)
    p = to_minimization(p, directions)
    r = to_minimization(r.reshape(1, -1), directions)[0]
    p = p[np.isfinite(p).all(axis=1) & (p < r).all(axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[pareto_indices(p)]
    if m == 1:
        return float(r[0] - p[:, 0].min())
    if m == 2:
        return _hv2(p, r)
    return _hv3(p, r)


def _hv2(p: np.ndarray, r: np.ndarray) -> float:
    """Area dominated by 2-D points (minimisation): a sweep along the first objective."""
    total, best_y = 0.0, r[1]
    for x, y in p[np.lexsort((p[:, 1], p[:, 0]))]:
        if y < best_y:
            total += (r[0] - x) * (best_y - y)
            best_y = y
    return float(total)


def _hv3(p: np.ndarray, r: np.ndarray) -> float:
    """Volume dominated by 3-D points: slices along the third objective, each a 2-D area."""
    p = p[np.argsort(p[:, 2], kind="stable")]
    total = 0.0
    for i in range(len(p)):
        top = r[2] if i + 1 == len(p) else p[i + 1, 2]
        if top > p[i, 2]:
            total += _hv2(p[: i + 1, :2], r[:2]) * (top - p[i, 2])
    return float(total)
