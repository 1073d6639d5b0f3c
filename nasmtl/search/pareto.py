"""Pareto dominance, non-dominated sorting and crowding distance (all objectives minimised)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

Directions = Sequence[str]


def to_minimization(points: np.ndarray | Sequence[Sequence[float]], directions: Directions | None) -> np.ndarray:
    """``points`` as a float array with maximised objectives negated, so that smaller is better everywhere."""
    p = np.asarray(points, dtype=float)
    if p.ndim == 1:
        p = p.reshape(1, -1) if p.size else p.reshape(0, len(directions or ()))
    if directions is None:
        return p.copy()
    if len(directions) != p.shape[1]:
        raise ValueError(f"{len(directions)} directions for {p.shape[1]} objectives")
    bad = [d for d in directions if d not in ("minimize", "maximize")]
    if bad:
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {bad[0]!r}")
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return p * sign


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool((x <= y).all() and (x < y).any())


def non_dominated_sort(points: np.ndarray | Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of ``points`` by Pareto front: the non-dominated first, then the next layer, ..."""
    p = np.asarray(points, dtype=float)
    n = len(p)
    if n == 0:
        return []
    le = (p[:, None, :] <= p[None, :, :]).all(axis=2)
    lt = (p[:, None, :] < p[None, :, :]).any(axis=2)
    dom = le & lt
    count = dom.sum(axis=0)
    fronts: list[list[int]] = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in np.flatnonzero(dom[i]):
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(int(j))
        current = sorted(nxt)
    return fronts


def pareto_indices(points: np.ndarray | Sequence[Sequence[float]], directions: Directions | None = None) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point all stay).

    A sweep in lexicographic order, checking each point against the front so far: a dominator
    always sorts first, so memory stays linear (benchmark tables hold tens of thousands of rows).
    """
    p = to_minimization(points, directions)
    if len(p) == 0:
        return []
    front: list[int] = []
    for i in np.lexsort(p.T[::-1]):
        if front:
            f = p[front]
            if (np.all(f <= p[i], axis=1) & np.any(f < p[i], axis=1)).any():
                continue
        front.append(int(i))
    return sorted(front)


def crowding_distance(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """NSGA-II crowding distance of each point within its set (boundary points get ``inf``)."""
    p = np.asarray(points, dtype=float)
    n = len(p)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(p.shape[1]):
        order = np.argsort(p[:, k], kind="stable")
        lo, hi = p[order[0], k], p[order[-1], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if hi > lo:
            dist[order[1:-1]] += (p[order[2:], k] - p[order[:-2], k]) / (hi - lo)
    return dist
