"""Multi-objective early stopping (optuna cannot prune multi-objective studies).

Each trial records its partial objective vector after every epoch. At epoch ``e`` a running trial
is compared with the partial vectors other trials recorded at the same epoch: when at least
``min_trials`` of them exist and at least ``fraction`` of them dominate it, it stops (a
successive-halving rule: with ``fraction=0.5`` roughly the dominated half of each rung stops).
Only the objectives known at that epoch take part (e.g. latency is measured after training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from nasmtl.search.pareto import to_minimization


class Pruner(Protocol):
    """Decides at each evaluation point whether a running trial stops (the engine's only view of it)."""

    record_key: str
    """User-attribute prefix of the partial vectors it compares (``epoch:K``, ``rung:K``)."""

    def should_stop(self, index: int, partial: Mapping[str, float], others: Sequence[Mapping[str, float]]) -> bool:
        """Whether the trial with ``partial`` at point ``index`` stops, given others' records there."""
        ...


@dataclass(frozen=True)
class MultiObjectivePruner:
    """Stops a trial whose partial result is dominated by enough results of other trials at the same epoch."""

    objectives: Sequence[str]
    directions: Sequence[str]
    min_trials: int = 4
    fraction: float = 0.5
    min_epoch: int = 0
    record_key: str = "epoch"

    def should_stop(self, epoch: int, partial: Mapping[str, float],
                    others: Sequence[Mapping[str, float]]) -> bool:
        """Whether a trial with ``partial`` at ``epoch`` should stop, given others' records at that epoch."""
        if epoch < self.min_epoch:
            return False
        keys = [k for k in self.objectives if k in partial]
        if not keys:
            return False
        rows = [o for o in others if all(k in o for k in keys)]
        if len(rows) < self.min_trials:
            return False
        dirs = [self.directions[list(self.objectives).index(k)] for k in keys]
        mine = to_minimization([[partial[k] for k in keys]], dirs)[0]
        theirs = to_minimization([[o[k] for k in keys] for o in rows], dirs)
        dominating = ((theirs <= mine).all(axis=1) & (theirs < mine).any(axis=1)).sum()
        return bool(dominating >= max(1, int(np.ceil(self.fraction * len(rows)))))
