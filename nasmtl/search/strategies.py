"""Our samplers as ask/tell strategies of the benchmark runner (``nasmtl bench --sampler NAME``).

Importing this module registers ``evolution``, ``nsga2``, ``nsga3``, ``tpe``, ``predictor`` and
``predictor-from-imagenet16`` in ``nasmtl.nasbench.runner.STRATEGIES`` (the runner imports it
itself; it never imports optuna). ``predictor-from-imagenet16`` is the predictor sampler
warm-started from ``predictors/nb201-imagenet16.onnx`` (NAS-Bench-201 ImageNet16-120 accuracy):
for NAS-Bench-201 CIFAR-10 or CIFAR-100 searches, not ImageNet16-120 ones (its own training data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import optuna

from nasmtl.nasbench.runner import register_strategy
from nasmtl.search.evolution import EvolutionStrategy
from nasmtl.search.samplers import SamplerProposer, make_sampler

MAX_REPEATS = 50


@dataclass
class OptunaStrategy:
    """An optuna sampler behind ask/tell on an in-memory study; a repeated design is told its known values."""

    space: Any
    directions: Sequence[str]
    seed: int
    sampler: str
    _study: optuna.Study = field(init=False, repr=False)
    _proposer: SamplerProposer = field(init=False, repr=False)
    _pending: dict[str, list[optuna.Trial]] = field(default_factory=dict, repr=False)
    _known: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(directions=list(self.directions),
                                          sampler=make_sampler(self.sampler, self.seed))
        self._proposer = SamplerProposer(self.space, self.seed)

    def ask(self) -> Any:
        """The sampler's next design that has not been evaluated yet (or its last try)."""
        for _ in range(MAX_REPEATS):
            trial = self._study.ask()
            x = self._proposer.propose(trial)
            key = self.space.encode(x)
            if key in self._known:
                self._study.tell(trial, list(self._known[key]))
                continue
            break
        self._pending.setdefault(key, []).append(trial)
        return x

    def tell(self, design: Any, objectives: Sequence[float]) -> None:
        """Report the values of an asked design."""
        key = self.space.encode(design)
        self._known[key] = tuple(float(v) for v in objectives)
        for trial in self._pending.pop(key, []):
            self._study.tell(trial, list(objectives))


def _optuna_factory(name: str) -> Any:
    def factory(space: Any, directions: Sequence[str], seed: int) -> OptunaStrategy:
        return OptunaStrategy(space, directions, seed, name)

    return factory


def _evolution(space: Any, directions: Sequence[str], seed: int) -> EvolutionStrategy:
    return EvolutionStrategy(space, list(directions), seed=seed)


for _name in ("nsga2", "nsga3", "tpe"):
    register_strategy(_name, _optuna_factory(_name))
register_strategy("evolution", _evolution)


def _predictor(space: Any, directions: Sequence[str], seed: int) -> Any:
    from nasmtl.predict.strategy import PredictorStrategy

    return PredictorStrategy(space, list(directions), seed=seed)


register_strategy("predictor", _predictor)


def _predictor_from_imagenet16(space: Any, directions: Sequence[str], seed: int) -> Any:
    from nasmtl.nasbench.table import BenchmarkError
    from nasmtl.predict.model import PredictorError
    from nasmtl.predict.strategy import PredictorStrategy
    from nasmtl.predict.source import nb201_imagenet16_source

    try:
        source = nb201_imagenet16_source(space)
    except PredictorError as e:
        raise BenchmarkError(f"sampler predictor-from-imagenet16: {e}") from None
    return PredictorStrategy(space, list(directions), seed=seed, n_init=5, source=source)


register_strategy("predictor-from-imagenet16", _predictor_from_imagenet16)
