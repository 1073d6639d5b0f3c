"""Samplers by name, and proposers: how a trial gets its design.

``random``, ``nsga2``, ``nsga3`` and ``tpe`` (multivariate, grouped) are optuna samplers; they
drive a ``DecisionSpace`` decision by decision (each decision is a categorical parameter, so
optuna-dashboard shows it); spaces without ``sample_with`` are sampled with an RNG seeded by the
trial. ``evolution`` is our ask/tell ``EvolutionStrategy``, fed with the study's finished trials.
Whatever proposed a design, its decisions end up as the trial's categorical parameters
(``Proposer.record``), so every sampler's trials show their decisions in optuna-dashboard.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution

from nasmtl.config import SAMPLERS
from nasmtl.spaces.base import design_options
from nasmtl.search.evolution import EvolutionStrategy


def make_sampler(name: str, seed: int, population: int | None = None) -> optuna.samplers.BaseSampler:
    """The optuna sampler of a study (``evolution`` proposes designs itself; its study samples at random).

    Objective bounds reach the samplers as the trials' own constraints (``Trial.set_constraint``,
    set by the engine), which NSGA-II/III and TPE read for constrained domination."""
    if name in ("random", "evolution", "predictor"):
        return optuna.samplers.RandomSampler(seed=seed)
    pop = {} if population is None else {"population_size": max(2, population)}
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **pop)
    if name == "nsga3":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIIISampler(seed=seed, **pop)
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    raise ValueError(f"unknown sampler {name!r} (samplers: {', '.join(SAMPLERS)})")


@dataclass
class ParamNames:
    """Optuna parameter names of decisions: the decision key, or ``key#hash`` when the key was already
    used with other options (optuna keeps one distribution per name in a study)."""

    _choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _learned: set[int] = field(default_factory=set)

    def name(self, key: str, options: Sequence[str]) -> str:
        opts = tuple(options)
        known = self._choices.setdefault(key, opts)
        if known == opts:
            return key
        name = f"{key}#{_options_hash(opts)}"
        self._choices.setdefault(name, opts)
        return name

    def learn(self, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        """Remember the option sets of parameters already in the study (so names stay consistent); each
        finished trial is read once, so the engine can call this before every trial at no growing cost."""
        for t in trials:
            if t.number in self._learned:
                continue
            if t.state.is_finished():
                self._learned.add(t.number)
            for k, d in t.distributions.items():
                if isinstance(d, CategoricalDistribution):
                    self._choices.setdefault(k, tuple(str(c) for c in d.choices))


def record_decisions(trial: optuna.Trial, space: Any, design: Any, names: ParamNames) -> int:
    """Write the decisions of ``design`` as ``trial``'s categorical parameters; returns how many.

    For designs that no optuna sampler drew (evolution, predictors, enqueued starts, RNG-sampled
    spaces): the values are set in the storage as they are, nothing is sampled. A trial that already
    has parameters (its sampler suggested them) is left alone.
    """
    if trial.params:
        return 0
    chosen = space.choices(design)
    n = 0
    for key, options in design_options(space, design).items():
        value = chosen.get(key)
        if value is None or value not in options:
            continue
        dist = CategoricalDistribution(list(options))
        trial.storage.set_trial_param(trial._trial_id, names.name(key, options), dist.to_internal_repr(value), dist)
        n += 1
    return n


class Proposer(abc.ABC):
    """Gives each new trial its design and learns from finished trials; the hooks default to doing nothing."""

    names: ParamNames

    @abc.abstractmethod
    def propose(self, trial: optuna.Trial) -> Any:
        """The design of ``trial`` (its decisions may be suggested on the trial)."""

    def observe(self, design: Any, values: Sequence[float] | None, fidelity: float | None = None) -> None:
        """A finished trial of the study (values ``None`` for a failed or stopped one; ``fidelity``: the
        training steps behind the values in a multi-fidelity search)."""

    def learn_distributions(self, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        """The study's trials, read before each new one (parameter names stay consistent)."""
        self._names().learn(trials)

    def record(self, trial: optuna.Trial, space: Any, design: Any) -> None:
        """Make the design's decisions ``trial``'s parameters where no sampler suggested them."""
        record_decisions(trial, space, design, self._names())

    def _names(self) -> ParamNames:
        if not hasattr(self, "names"):
            self.names = ParamNames()
        return self.names


def takes_keyword(fn: Any, name: str) -> bool:
    """Whether ``fn`` accepts a parameter ``name`` (hooks written before it was added do not)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _options_hash(options: Sequence[str]) -> str:
    return hashlib.sha1("\x1f".join(options).encode()).hexdigest()[:6]


@dataclass
class SamplerProposer(Proposer):
    """Designs drawn through the study's optuna sampler, one categorical parameter per decision."""

    space: Any
    seed: int = 0
    names: ParamNames = field(default_factory=ParamNames)
    prior: Any = None
    """Transferred sampling weights: with them, designs are drawn from the space with an RNG (``random`` sampler)."""

    def param_name(self, key: str, options: Sequence[str]) -> str:
        """``key``, or ``key#hash`` when ``key`` was already used with other options."""
        return self.names.name(key, options)

    def propose(self, trial: optuna.Trial) -> Any:
        if self.prior is not None:
            return self.space.sample(np.random.default_rng([self.seed, trial.number]), self.prior)
        if hasattr(self.space, "sample_with"):
            def decide(key: str, options: Sequence[str], weights: Sequence[float]) -> str:
                return trial.suggest_categorical(self.param_name(key, options), list(options))

            return self.space.sample_with(decide)
        return self.space.sample(np.random.default_rng([self.seed, trial.number]))



@dataclass
class StrategyProposer(Proposer):
    """Designs from an ask/tell strategy (``EvolutionStrategy``)."""

    strategy: Any
    names: ParamNames = field(default_factory=ParamNames)

    def propose(self, trial: optuna.Trial) -> Any:
        """The strategy's next design; a skipping predictor strategy records its running count of declined
        candidates as the trial's ``predictor_skipped`` attribute."""
        design = self.strategy.ask()
        if getattr(self.strategy, "skip_dominated", False):
            trial.set_user_attr("predictor_skipped", int(self.strategy.skipped))
        return design

    def observe(self, design: Any, values: Sequence[float] | None, fidelity: float | None = None) -> None:
        if values is None:
            if hasattr(self.strategy, "seen"):
                self.strategy.seen(design)
        elif fidelity is not None and takes_keyword(self.strategy.tell, "fidelity"):
            self.strategy.tell(design, values, fidelity=fidelity)
        else:
            self.strategy.tell(design, values)


def make_proposer(name: str, space: Any, directions: Sequence[str], seed: int, population: int = 16,
                  predictor_skip: bool = False) -> Proposer:
    """The proposer for sampler ``name`` (``predictor_skip``: the predictor strategy's ``skip_dominated``)."""
    if name == "evolution":
        return StrategyProposer(EvolutionStrategy(space, list(directions), seed=seed, population=population))
    if name == "predictor":
        from nasmtl.predict.strategy import PredictorStrategy

        return StrategyProposer(PredictorStrategy(space, list(directions), seed=seed, n_init=max(2, population),
                                                  skip_dominated=predictor_skip))
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r} (samplers: {', '.join(SAMPLERS)})")
    return SamplerProposer(space, seed)
