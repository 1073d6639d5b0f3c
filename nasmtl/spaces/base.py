"""The ``SearchSpace`` protocol: what every kind of space offers the search engine.

Spaces know nothing of optuna: the engine reaches a space only through these methods.
A design is any immutable Python value; its canonical string (``encode``) identifies it,
so equal designs have equal strings and the engine never trains one design twice.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from nasmtl.arch.ir import Arch
from nasmtl.arch.registry import Shape

D = TypeVar("D")

Prior = Mapping[str, Mapping[str, float]]
"""Sampling weights per decision: ``{decision: {option: weight}}``, keys as in ``choices()``."""


class SpaceError(ValueError):
    """A space file or a design string that is not valid; the message names file and place."""


@runtime_checkable
class SearchSpace(Protocol[D]):
    """Sample, vary and identify designs of one kind."""

    name: str

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> D:
        """Draw a valid design (optionally reweighted by a prior over ``choices``)."""
        ...

    def mutate(self, x: D, rng: np.random.Generator) -> D:
        """A valid design that differs from ``x`` in one local decision."""
        ...

    def crossover(self, a: D, b: D, rng: np.random.Generator) -> D:
        """A valid child mixing two parents (``NotImplementedError`` where not meaningful)."""
        ...

    def encode(self, x: D) -> str:
        """The canonical string of a design."""
        ...

    def decode(self, s: str) -> D:
        """Inverse of ``encode``; raises ``SpaceError`` for a string that is not a design."""
        ...

    def choices(self, x: D) -> dict[str, str]:
        """The design decisions ``{decision: option}``, for priors, reports and optuna params."""
        ...

    def size(self) -> float:
        """The number of designs (an estimate where exact counting is hard; ``inf`` if unbounded)."""
        ...


@runtime_checkable
class ArchitectureSpace(SearchSpace[D], Protocol):
    """A space whose designs build into a backbone: a chain of single-input stages."""

    def stages(self, x: D, input_shape: Shape) -> list[Arch]:
        """The backbone of ``x`` as stages; each is an Arch with one output named ``out``.

        Layout building copies stages per task group, so cuts go only where the space allows.
        """
        ...


def weighted_choice(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float]) -> Any:
    """Pick one option with probability proportional to its weight."""
    w = np.asarray(weights, dtype=float)
    if len(options) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise SpaceError(f"cannot choose among {list(options)} with weights {list(weights)}")
    return options[int(rng.choice(len(options), p=w / w.sum()))]
