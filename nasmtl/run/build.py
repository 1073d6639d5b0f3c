"""What a run's config builds: its space and evaluator (built once), the engine, priors, start designs,
and the final phase that trains the finalists with the same space and data.

This is the composition layer: it wires ``nasmtl.search`` (engine, samplers, pruners, final
training) and ``nasmtl.priors`` (transferred priors, the local bank) together, so neither of those
packages needs the other's run-level code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import optuna

from nasmtl.config import RunConfig
from nasmtl.run.lifecycle import Run
from nasmtl.search.engine import Engine, SearchBudget, Summary, pareto_trials
from nasmtl.search.fidelity import SuccessiveHalving
from nasmtl.search.pruning import MultiObjectivePruner, Pruner
from nasmtl.search.samplers import make_proposer


def stderr_line(line: str) -> None:
    """Progress to stderr, one line per trial."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Parts:
    """A run's search space and evaluator (which holds the loaded data set), built once from its config."""

    space: Any
    evaluator: Any

    @property
    def data(self) -> Any:
        """The evaluator's data set (``None`` for an evaluator without one, e.g. a test double)."""
        return getattr(self.evaluator, "data", None)


def build_parts(cfg: RunConfig) -> Parts:
    """The space and evaluator of ``cfg`` (the data set read once for both, tasks and objectives checked)."""
    from nasmtl.search import evaluate

    data = evaluate.load_data(cfg)
    space = evaluate.load_space(cfg, data)
    return Parts(space, evaluate.build_evaluator(cfg, space, data))


def make_pruner(cfg: RunConfig) -> Pruner | None:
    """The run's pruner: early stopping, successive halving (multi-fidelity) or none."""
    es = cfg.search.early_stopping
    if es.enabled:
        return MultiObjectivePruner(cfg.objective_names, cfg.directions, es.min_trials, es.fraction, es.min_epoch)
    if cfg.search.multi_fidelity:
        return SuccessiveHalving(cfg.objective_names, cfg.directions, cfg.search.fidelity.eta,
                                 [o.bound for o in cfg.objectives])
    return None


def build_engine(run: Run, trials: int | None = None, seconds: float | None = None,
                 progress: Callable[[str], None] | None = stderr_line, status: Any = None,
                 parts: Parts | None = None) -> Engine:
    """The engine of a run (``trials``/``seconds`` override the config's search budget); priors and start
    designs are enqueued on a fresh study. ``parts``: the run's space and evaluator when already built."""
    cfg = run.config
    parts = parts or build_parts(cfg)
    space = parts.space
    proposer = make_proposer(cfg.search.sampler, space, cfg.directions, cfg.search.seed, cfg.search.population,
                             cfg.search.predictor_skip)
    if cfg.search.priors:
        from nasmtl.priors.transfer import apply_priors

        apply_priors(run, space, proposer, parts.data, progress)
    if cfg.search.start:
        from nasmtl.search.start import enqueue_start, start_designs

        designs = start_designs(space, cfg.search.start, cfg.resolve, cfg.search.seed, cfg.source)
        if not run.study.get_trials(deepcopy=False):
            enqueue_start(run.study, designs)
    budget = SearchBudget(trials if trials is not None else cfg.search.trials,
                          seconds if seconds is not None else cfg.search.seconds, cfg.search.max_failures)
    return Engine(run.study, space, parts.evaluator, cfg.objectives, proposer, run.dir, budget, make_pruner(cfg),
                  cfg.search.trial_timeout, progress, status, shared=run.storage is not None)


def run_engine(run: Run, trials: int | None = None, seconds: float | None = None,
               progress: Callable[[str], None] | None = stderr_line, status: Any = None,
               engine: Engine | None = None) -> Summary:
    """Run trials of ``run`` until its budget is reached, then add them to the local bank (``runs/bank.jsonl``)
    unless ``[search] bank = false``."""
    from nasmtl.priors.transfer import bank_after_run

    engine = engine or build_engine(run, trials, seconds, progress, status)
    summary = engine.run()
    if run.config.search.bank:
        bank_after_run(run, engine.evaluator, progress)
    return summary


def finalists(run: Run) -> list[optuna.trial.FrozenTrial]:
    """The Pareto members a finished search trains at the final budget (``[final] members``)."""
    from nasmtl.search.final import select_finalists

    front = pareto_trials(run.study.get_trials(deepcopy=False), run.config.directions)
    return select_finalists(front, run.config.objectives, run.config.final.members)


def run_final_phase(run: Run, progress: Callable[[str], None] | None = stderr_line, status: Any = None,
                    engine: Engine | None = None) -> list:
    """Train the run's finalists and baselines from scratch at the final budget (records in ``final/``);
    ``status``: a ``Progress`` for the live status line (models done, time left); ``engine``: the
    search's engine, whose space and data set are used again instead of being loaded anew."""
    from nasmtl.search.final import final_budget, run_final

    cfg = run.config
    chosen = finalists(run)
    if not chosen and not cfg.search.baselines:
        return []
    if progress is not None:
        progress(f"final training ({final_budget(cfg).describe()}): trial(s) "
                 f"{', '.join(str(t.number) for t in chosen) or 'none'} and the baselines")
    reuse = {"space": engine.space, "evaluator": engine.evaluator} if engine is not None else {}
    return run_final(run.dir, cfg, chosen, progress=progress, status=status, **reuse)
