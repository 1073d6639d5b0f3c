"""Run search strategies against benchmark tables: a query is a lookup, so whole studies take seconds.

A strategy speaks a small ask/tell interface; ``STRATEGIES`` maps names to factories and any
module may add to it with :func:`register_strategy` (``nasmtl.search.strategies``, when present,
is imported before a lookup so its registrations are seen).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from nasmtl.nasbench.table import BenchmarkError, Table, finite_pareto_indices, load_table
from nasmtl.search.hypervolume import hypervolume
from nasmtl.spaces.base import SearchSpace

PLUGIN_MODULE = "nasmtl.search.strategies"
"""Imported before a strategy lookup, so strategies it registers are available."""


class Strategy(Protocol):
    """A search strategy: ``ask`` proposes a design, ``tell`` reports its objective values."""

    def ask(self) -> Any:
        """The next design to evaluate."""
        ...

    def tell(self, design: Any, objectives: tuple[float, ...]) -> None:
        """The objective values of an asked design (in the table's units; see the directions)."""
        ...


StrategyFactory = Callable[[SearchSpace, Sequence[str], int], Strategy]
"""``factory(space, directions, seed)``; directions are "maximize"/"minimize" per objective."""


@dataclass
class RandomStrategy:
    """Random sampling from the space (reweighted by ``prior``), skipping designs already asked (by canonical string)."""

    space: SearchSpace
    directions: Sequence[str]
    seed: int
    prior: Any = None
    """Sampling weights (``{decision: {option: weight}}``, e.g. transferred priors); ``None``: the space's own."""
    _rng: np.random.Generator = field(init=False, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def ask(self) -> Any:
        for _ in range(100):
            x = self.space.sample(self._rng, self.prior)
            key = self.space.encode(x)
            if key not in self._seen:
                break
        self._seen.add(key)
        return x

    def tell(self, design: Any, objectives: tuple[float, ...]) -> None:
        return None


STRATEGIES: dict[str, StrategyFactory] = {"random": RandomStrategy}
"""Strategy factories by name."""


def register_strategy(name: str, factory: StrategyFactory) -> None:
    """Make a strategy available to ``nasmtl bench --sampler NAME``."""
    STRATEGIES[name] = factory


def _load_plugins() -> None:
    try:
        importlib.import_module(PLUGIN_MODULE)
    except ModuleNotFoundError as e:
        if e.name not in (PLUGIN_MODULE, "nasmtl.search"):
            raise


def strategy_factory(name: str) -> StrategyFactory:
    """The registered factory of ``name``; unknown names list the available ones."""
    _load_plugins()
    if name not in STRATEGIES:
        raise BenchmarkError(f"unknown sampler '{name}'; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


# ---- runs ---------------------------------------------------------------------------------------


@dataclass
class SeedRun:
    """One search of one seed: what was queried and how good the best so far was after each query."""

    seed: int
    designs: list[str]
    values: list[list[float]]
    curve: list[float]
    """Single-objective: regret after each query; multi-objective: hypervolume fraction."""
    final: float
    chosen: str | None = None
    chosen_test_acc: float | None = None


@dataclass
class BenchResult:
    """All seeds of one sampler on one table and data set, with a summary."""

    table: str
    dataset: str
    sampler: str
    budget: int
    objectives: list[str]
    directions: list[str]
    reference: dict[str, Any]
    runs: list[SeedRun]
    summary: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_benchmark(table: Table[Any] | str, sampler: str = "random", budget: int = 100, seeds: int = 10,
                  dataset: str | None = None, objectives: Sequence[str] = ("val_acc",),
                  on_seed: Callable[[int, int, float], None] | None = None) -> BenchResult:
    """Run ``sampler`` for ``budget`` queries on each of ``seeds`` seeds (0..seeds-1); ``on_seed(done,
    seeds, final)`` after each seed (a progress display).

    One objective: regret of that metric against the table's best, and the test accuracy (when
    the table has one) of the best design found. Two or three: hypervolume of the found points as
    a fraction of the true front's, objectives normalised by the table's range, reference 1.1.
    """
    tab = load_table(table) if isinstance(table, str) else table
    ds = tab._dataset(dataset)
    objs = list(objectives)
    if not 1 <= len(objs) <= 3 or len(set(objs)) != len(objs):
        raise BenchmarkError(f"give 1 to 3 distinct objectives, got {objs}")
    for m in objs:
        if not tab.has(ds, m):
            raise BenchmarkError(f"table '{tab.name}' has no metric '{m}' on {ds}; available: "
                                 f"{', '.join(x for x in tab.metrics if tab.has(ds, x))}")
    if budget < 1 or seeds < 1:
        raise BenchmarkError("budget and seeds must be at least 1")
    dirs = [tab.directions[m] for m in objs]
    factory = strategy_factory(sampler)
    raw = tab.values[ds][:, [tab.metrics.index(m) for m in objs]]
    pts = tab.minimised(ds, objs)
    lo, hi = np.nanmin(pts, axis=0), np.nanmax(pts, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    ref = np.full(len(objs), 1.1)
    if len(objs) == 1:
        _, best = tab.best(ds, objs[0])
        reference: dict[str, Any] = {"best": best}
    else:
        true_hv = hypervolume((pts - lo) / span, ref)
        front = pts[finite_pareto_indices(pts)]
        reference = {"front_size": len(np.unique(front, axis=0)), "true_hypervolume": true_hv}
    has_test = tab.has(ds, "test_acc")
    runs = []
    for seed in range(seeds):
        strat = factory(tab.space, list(dirs), seed)
        designs, values, curve, rows = [], [], [], []
        best_so_far = None
        for _ in range(budget):
            x = strat.ask()
            row = tab.row(x)
            vals = tuple(float(v) for v in raw[row])
            strat.tell(x, vals)
            designs.append(tab.space.encode(x))
            values.append(list(vals))
            rows.append(row)
            if len(objs) == 1:
                v = vals[0]
                if best_so_far is None or (v > best_so_far if dirs[0] == "maximize" else v < best_so_far):
                    best_so_far = v
                curve.append(abs(reference["best"] - best_so_far))
            else:
                found = (pts[rows] - lo) / span
                curve.append(hypervolume(found, ref) / reference["true_hypervolume"])
        run = SeedRun(seed, designs, values, curve, curve[-1])
        if len(objs) == 1:
            sign = 1.0 if dirs[0] == "maximize" else -1.0
            i = int(np.argmax([sign * v[0] for v in values]))
            run.chosen = designs[i]
            if has_test:
                run.chosen_test_acc = float(tab.column(ds, "test_acc")[rows[i]])
        runs.append(run)
        if on_seed is not None:
            on_seed(len(runs), seeds, run.final)
    finals = np.array([r.final for r in runs])
    summary = {"mean": float(finals.mean()), "median": float(np.median(finals)),
               "std": float(finals.std()), "min": float(finals.min()), "max": float(finals.max())}
    if has_test and len(objs) == 1:
        summary["mean_chosen_test_acc"] = float(np.mean([r.chosen_test_acc for r in runs]))
    return BenchResult(tab.name, ds, sampler, budget, objs, dirs, reference, runs, summary)
