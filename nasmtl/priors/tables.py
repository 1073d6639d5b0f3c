"""TransNAS-Bench-101 (micro) as a nasmtl benchmark ``Table``, read from ``../shared/benchmarks``.

The table holds about 711 cells scored on 7 Taskonomy tasks (``val_acc`` = each task's own
validation metric, higher is better). Its space is NAS-Bench-201's cell with the 4 ops none,
skip, conv1x1, conv3x3, restricted to the cells the table holds: a design is the 6-digit key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from nasmtl.nasbench.table import Table
from nasmtl.priors.bank import TRANSNAS_OPS, read_transnas, transnas_choices
from nasmtl.spaces.base import Prior, SpaceError, weighted_choice


@dataclass
class FiniteCellSpace:
    """The cells of a table (6-digit keys, one op index per edge) as a ``SearchSpace``."""

    keys: tuple[str, ...]
    name: str = "transnas-micro"
    ops: tuple[str, ...] = TRANSNAS_OPS
    _set: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._set = frozenset(self.keys)

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> str:
        """A cell of the table, with probability proportional to the product of its options' prior weights."""
        if not prior:
            return self.keys[int(rng.integers(len(self.keys)))]
        w = np.ones(len(self.keys))
        for i in range(6):
            table = prior.get(f"edge_{i}")
            if table:
                per_op = np.array([float(table.get(op, 0.0)) for op in self.ops])
                w *= per_op[[int(k[i]) for k in self.keys]]
        if w.sum() <= 0:
            w = np.ones(len(self.keys))
        return weighted_choice(rng, self.keys, w)

    def mutate(self, x: str, rng: np.random.Generator) -> str:
        """A table cell differing from ``x`` in one edge (``x`` itself if it has no such neighbour)."""
        for i in rng.permutation(6):
            for op in rng.permutation(len(self.ops)):
                y = x[:i] + str(op) + x[i + 1:]
                if y != x and y in self._set:
                    return y
        return x

    def crossover(self, a: str, b: str, rng: np.random.Generator) -> str:
        """Uniform crossover over the edges, retried until the child is a table cell (else ``a``)."""
        for _ in range(20):
            y = "".join(a[i] if rng.random() < 0.5 else b[i] for i in range(6))
            if y in self._set:
                return y
        return a

    def encode(self, x: str) -> str:
        """The 6-digit key."""
        return self.decode(x)

    def decode(self, s: str) -> str:
        """A key of the table; anything else raises ``SpaceError``."""
        if s not in self._set:
            raise SpaceError(f"space '{self.name}': {s!r} is not a cell of the table")
        return s

    def choices(self, x: str) -> dict[str, str]:
        """``{"edge_0": "nor_conv_3x3", ...}``."""
        return transnas_choices(self.decode(x))

    def size(self) -> float:
        """The number of cells in the table."""
        return float(len(self.keys))


@lru_cache(maxsize=None)
def transnas_table(path: str | None = None) -> Table[str]:
    """TransNAS-Bench-101 micro: the cells common to its 7 tasks x ``val_acc``."""
    data = read_transnas(Path(path) if path else None)
    tasks: Sequence[str] = tuple(data)
    keys = tuple(sorted(set.intersection(*(set(v) for v in data.values()))))
    space = FiniteCellSpace(keys)
    values = {t: np.array([[data[t][k]] for k in keys]) for t in tasks}
    return Table(name="transnas-micro", space=space, datasets=tuple(tasks), metrics=("val_acc",),
                 directions={"val_acc": "maximize"}, keys=keys, values=values, key_of=space.encode,
                 design_of=space.decode, notes="TransNAS-Bench-101 micro (NASLib zero-cost file): val_accuracy")
