"""Multi-fidelity search: successive halving over training steps, promotion by Pareto rank.

A trial trains to the first rung of a ``Schedule`` and reports its partial objective vector there
(validation metrics of the model so far, and the costs of the design, which training does not
change). It goes on to the next rung only when it is among the best ``1/eta`` of the trials
measured at that rung: ranked first by feasibility (objective bounds), then by non-dominated
front, then by crowding distance within the front, so the ends of each front go first. Otherwise
it stops there and is measured and completed at that fidelity, so the sampler still learns from
it. This is the asynchronous form of successive halving (as optuna's ``SuccessiveHalvingPruner``
and ASHA decide it): a trial is judged against those that reached the rung before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from nasmtl.search.pareto import crowding_distance, non_dominated_sort, to_minimization


@dataclass(frozen=True)
class Schedule:
    """Training steps of each rung, lowest first; the last rung is the full trial budget."""

    steps: tuple[int, ...]
    eta: float

    @classmethod
    def geometric(cls, top: int, rungs: int, eta: float) -> "Schedule":
        """``rungs`` rungs ending at ``top`` steps, each ``eta`` times the one below (duplicates merged)."""
        if top < 1 or rungs < 1 or not eta > 1:
            raise ValueError(f"a schedule needs top >= 1, rungs >= 1 and eta > 1, got {top}, {rungs}, {eta}")
        steps = sorted({max(1, int(round(top / eta ** k))) for k in range(rungs)})
        return cls(tuple(steps), float(eta))


@dataclass(frozen=True)
class SuccessiveHalving:
    """The promotion rule at each rung (the engine's ``should_stop`` interface: True means stop here)."""

    objectives: Sequence[str]
    directions: Sequence[str]
    eta: float = 3.0
    bounds: Sequence[float | None] | None = None
    record_key: str = "rung"
    """User-attribute prefix of the partial vectors (``rung:K``)."""

    def should_stop(self, rung: int, partial: Mapping[str, float], others: Sequence[Mapping[str, float]]) -> bool:
        """Whether a trial with ``partial`` at ``rung`` stops there, given other trials' records at that rung."""
        keys = [k for k in self.objectives if k in partial]
        if not keys:
            return False
        rows = [o for o in others if all(k in o for k in keys)]
        quota = max(1, math.floor((len(rows) + 1) / self.eta))
        return rank_position([partial, *rows], keys, self._directions(keys), self._bounds(keys))[0] >= quota

    def _directions(self, keys: Sequence[str]) -> list[str]:
        return [self.directions[list(self.objectives).index(k)] for k in keys]

    def _bounds(self, keys: Sequence[str]) -> list[float | None]:
        if self.bounds is None:
            return [None] * len(keys)
        return [self.bounds[list(self.objectives).index(k)] for k in keys]


def violation(values: Sequence[float], directions: Sequence[str], bounds: Sequence[float | None]) -> float:
    """How far a vector misses its bounds in total (0 when it meets them all)."""
    out = 0.0
    for v, d, b in zip(values, directions, bounds):
        if b is not None:
            out += max(0.0, (b - v) if d == "maximize" else (v - b))
    return out


def rank_position(records: Sequence[Mapping[str, float]], keys: Sequence[str], directions: Sequence[str],
                  bounds: Sequence[float | None]) -> list[int]:
    """Each record's place (0 = best) by feasibility, then non-dominated front, then crowding (larger first)."""
    n = len(records)
    pts = np.array([[float(r[k]) for k in keys] for r in records], dtype=float).reshape(n, len(keys))
    miss = np.array([violation(p, directions, bounds) for p in pts])
    order: list[int] = []
    feasible = [i for i in range(n) if miss[i] == 0]
    if feasible:
        sub = to_minimization(pts[feasible], directions)
        for front in non_dominated_sort(sub):
            crowd = crowding_distance(sub[front])
            order += [feasible[front[j]] for j in sorted(range(len(front)), key=lambda j: (-crowd[j], front[j]))]
    order += sorted((i for i in range(n) if miss[i] > 0), key=lambda i: (miss[i], i))
    place = [0] * n
    for pos, i in enumerate(order):
        place[i] = pos
    return place
