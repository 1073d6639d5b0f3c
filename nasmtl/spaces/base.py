"""The ``SearchSpace`` protocol: what every kind of space offers the search engine.

Spaces know nothing of optuna: the engine reaches a space only through these methods.
A design is any immutable Python value; its canonical string (``encode``) identifies it,
so equal designs have equal strings and the engine never trains one design twice.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from nasmtl.arch.ir import Arch
from nasmtl.arch.registry import Shape
from nasmtl.errors import NasmtlError
from nasmtl.resources import shipped_path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SEARCH_SPACES = shipped_path("search_spaces")
"""The folder of shipped space files (a source checkout)."""

D = TypeVar("D")

Prior = Mapping[str, Mapping[str, float]]
"""Sampling weights per decision: ``{decision: {option: weight}}``, keys as in ``choices()``."""


Decide = Callable[[str, Sequence[str], Sequence[float]], str]
"""Makes one design decision: ``decide(key, options, weights) -> option``.

The same key always comes with the same options, so an external optimiser (the search engine's
optuna samplers) can treat each key as one categorical parameter.
"""


class SpaceError(NasmtlError, ValueError):
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


@runtime_checkable
class DecisionSpace(Protocol[D]):
    """A space whose sampling can be driven decision by decision from outside."""

    def sample_with(self, decide: Decide) -> D:
        """Build a design asking ``decide`` at every decision point (weights: the space's own)."""
        ...


def design_options(space: Any, x: Any) -> dict[str, tuple[str, ...]]:
    """Each decision of design ``x`` with the options it was chosen among, keyed as ``space.choices(x)``.

    From ``space.decision_options(x)`` where a space defines it (grammars: the rule's alternatives),
    else by replaying ``x`` through ``sample_with``; ``{}`` for a space with neither.
    """
    if hasattr(space, "decision_options"):
        return space.decision_options(x)
    if not hasattr(space, "sample_with"):
        return {}
    chosen = space.choices(x)
    asked: dict[str, tuple[str, ...]] = {}

    def replay(key: str, options: Sequence[str], weights: Sequence[float]) -> str:
        asked[key] = tuple(str(o) for o in options)
        return chosen[key] if key in chosen else options[0]

    space.sample_with(replay)
    return {k: v for k, v in asked.items() if k in chosen}


def rng_decide(rng: np.random.Generator, prior: Prior | None = None) -> Decide:
    """A ``Decide`` that draws from ``rng`` with the space's weights, reweighted by ``prior``."""

    def decide(key: str, options: Sequence[str], weights: Sequence[float]) -> str:
        w = list(weights)
        if prior and key in prior:
            w = [wi * float(prior[key].get(o, 0.0)) for wi, o in zip(w, options)]
            if sum(w) <= 0:
                w = list(weights)
        return weighted_choice(rng, options, w)

    return decide


def weighted_choice(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float]) -> Any:
    """Pick one option with probability proportional to its weight."""
    w = np.asarray(weights, dtype=float)
    if len(options) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise SpaceError(f"cannot choose among {list(options)} with weights {list(weights)}")
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def read_space_file(path: str | Path, what: str = "space") -> tuple[Path, dict[str, Any]]:
    """A space file's path and parsed TOML; a bare name (``nb201``) is looked up in ``search_spaces/``.

    Every failure is one ``SpaceError`` naming the file (``what`` says which kind of file it is).
    """
    p = Path(path)
    if not p.exists() and not p.suffix and (SEARCH_SPACES / f"{p}.toml").exists():
        p = SEARCH_SPACES / f"{p}.toml"
    try:
        return p, tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{p}: {what} file not found") from None
    except IsADirectoryError:
        raise SpaceError(f"{p}: {what} file is a directory") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{p}: not a text file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{p}: not valid TOML: {e}") from None
