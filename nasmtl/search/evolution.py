"""Multi-objective regularized evolution over ``SearchSpace.mutate``/``crossover``.

An ask/tell strategy: the first ``population`` designs are random; after that a parent is the
winner of a tournament (lowest Pareto rank within the population, then largest crowding
distance), optionally crossed with a second winner, then mutated. Every told design joins the
population and the oldest leaves it (age-based removal keeps the search moving), while the
tournament also sees the current Pareto archive so good designs are not forgotten.
Designs already asked are never proposed again (by canonical string).

Under multi-fidelity search a design is told with the training steps it reached: a design that
successive halving stopped at a low rung lost there, and its low-fidelity values (a tiny model
after 40 steps) are not comparable with those of designs trained to the top rung. A tournament
therefore prefers the design trained longest, and ranks by Pareto front and crowding among
designs of equal fidelity, so children come from the designs that earned their promotion.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nasmtl.search.pareto import crowding_distance, non_dominated_sort, to_minimization


@dataclass
class EvolutionStrategy:
    """Regularized evolution with Pareto-rank and crowding tournament selection (an ask/tell strategy)."""

    space: Any
    directions: Sequence[str]
    seed: int = 0
    population: int = 16
    tournament: int = 4
    crossover_prob: float = 0.3
    archive_size: int = 32
    novelty_tries: int = 50
    prior: Any = None
    """Sampling weights of the random designs (``{decision: {option: weight}}``, e.g. transferred priors)."""
    _rng: np.random.Generator = field(init=False, repr=False)
    _pop: deque = field(init=False, repr=False)
    _archive: list = field(default_factory=list, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    _told: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._pop = deque(maxlen=self.population)

    def ask(self) -> Any:
        """The next design: random while the population fills, then a mutated tournament winner."""
        x = None
        for _ in range(self.novelty_tries):
            fill = self._told < self.population or not self._pop
            x = self.space.sample(self._rng, self.prior) if fill else self._child()
            if self.space.encode(x) not in self._seen:
                break
        self._seen.add(self.space.encode(x))
        return x

    def seen(self, design: Any) -> None:
        """Mark a design as asked elsewhere (another worker, an earlier run), so it is not proposed."""
        self._seen.add(self.space.encode(design))

    def tell(self, design: Any, objectives: Sequence[float], fidelity: float | None = None) -> None:
        """Add an evaluated design (objective values in their own directions; ``fidelity``: the training
        steps behind them, None for a single-fidelity search)."""
        v = to_minimization([list(objectives)], self.directions)[0]
        if not np.isfinite(v).all():
            return
        f = math.inf if fidelity is None else float(fidelity)
        self._seen.add(self.space.encode(design))
        entry = (design, v, f)
        self._pop.append(entry)
        self._told += 1
        members = self._archive + [entry]
        # a design trained longer is not dominated by one trained less: fidelity is one more (maximised) axis
        pts = np.array([[*m[1], -m[2] if math.isfinite(m[2]) else 0.0] for m in members])
        front = non_dominated_sort(pts)[0]
        archive = [members[i] for i in front]
        if len(archive) > self.archive_size:
            cd = crowding_distance(pts[front])
            archive = [archive[i] for i in np.argsort(-cd, kind="stable")[: self.archive_size]]
        self._archive = archive

    def _select(self) -> Any:
        """Tournament winner among population and archive: the highest fidelity, then lowest Pareto rank and
        widest crowding distance among designs of that fidelity."""
        pool = list(self._pop) + [a for a in self._archive if all(a is not p for p in self._pop)]
        pts = np.array([p[1] for p in pool])
        fid = np.array([p[2] for p in pool])
        rank = np.empty(len(pool), dtype=int)
        crowd = np.empty(len(pool))
        for level in np.unique(fid):
            members = np.flatnonzero(fid == level)
            for r, front in enumerate(non_dominated_sort(pts[members])):
                rank[members[front]] = r
                crowd[members[front]] = crowding_distance(pts[members[front]])
        idx = self._rng.choice(len(pool), size=min(self.tournament, len(pool)), replace=False)
        best = min(idx, key=lambda i: (-fid[i], rank[i], -crowd[i]))
        return pool[int(best)][0]

    def _child(self) -> Any:
        parent = self._select()
        if self._rng.random() < self.crossover_prob:
            other = self._select()
            try:
                parent = self.space.crossover(parent, other, self._rng)
            except NotImplementedError:
                pass
        return self.space.mutate(parent, self._rng)
