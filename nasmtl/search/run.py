"""A named search run: its directory, its study in a storage, and the engine wired from its config.

``start_run`` creates a new run or resumes an existing one (the stored config wins on resume);
``join_run`` opens a study another process created (the config is read from the study's user
attrs, so a worker needs only the name and the storage URL); ``run_engine`` runs trials.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from nasmtl.config import ConfigError, RunConfig
from nasmtl.files import write_json
from nasmtl.search.engine import Engine, SearchBudget, Summary
from nasmtl.search.fidelity import SuccessiveHalving
from nasmtl.search.pruning import MultiObjectivePruner, Pruner
from nasmtl.search.samplers import make_proposer, make_sampler
from nasmtl.search.storage import StorageError, open_storage, redact

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"


@dataclass
class Run:
    """One named search: directory, config, storage URL (``None``: the journal file) and study."""

    name: str
    dir: Path
    config: RunConfig
    storage: str | None
    study: optuna.Study


def _study(name: str, storage: optuna.storages.BaseStorage, cfg: RunConfig, create: bool) -> optuna.Study:
    sampler = make_sampler(cfg.search.sampler, cfg.search.seed, cfg.search.population)
    if create:
        return optuna.create_study(study_name=name, storage=storage, directions=cfg.directions,
                                   sampler=sampler, load_if_exists=True)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def _study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_run_name(name: str) -> None:
    """A run name is a folder inside the runs directory: letters, digits, ``.``, ``_``, ``-``; no ``/``, no ``..``."""
    if not _RUN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"--name {name!r}: a run name is 1-128 letters, digits, '.', '_' or '-', not starting "
                          "with '.' or '-' and without '..' (it names a folder inside the runs directory)")


def discard_run(run_dir: Path, storage_url: str | None, name: str) -> None:
    """Remove what a search that could not start left behind: its new folder and, in a shared storage, its study."""
    import shutil

    if storage_url is not None:
        try:
            optuna.delete_study(study_name=name, storage=open_storage(storage_url, run_dir))
        except Exception:
            pass
    shutil.rmtree(run_dir, ignore_errors=True)


def start_run(cfg: RunConfig | None, name: str, storage_url: str | None = None,
              runs_root: Path = Path("runs")) -> Run:
    """Create run ``name`` from ``cfg``, or resume it (``cfg`` ``None``: the config stored with it)."""
    check_run_name(name)
    run_dir = runs_root / name
    if storage_url is None and (run_dir / RUN_FILE).is_file():
        storage_url = json.loads((run_dir / RUN_FILE).read_text()).get("storage")
    storage = open_storage(storage_url, run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name in _study_names(storage) and _half_made(storage, name):
        optuna.delete_study(study_name=name, storage=storage)
    if name in _study_names(storage):
        study = _study(name, storage, RunConfig.from_dict(_stored_config(storage, name)), create=False)
        stored = RunConfig.from_dict(study.user_attrs["config"], f"study {name!r}")
        if cfg is not None and _comparable(cfg) != _comparable(stored):
            raise ConfigError(f"run {name!r} already exists with another config; resume it with "
                              f"`nasmtl search --name {name}` or choose a new --name")
        cfg = stored
    else:
        if cfg is None:
            raise ConfigError(f"no run {name!r} in {redact(storage_url) if storage_url else run_dir} to resume; "
                              "give a config to start it")
        study = _study(name, storage, cfg, create=True)
        study.set_user_attr("config", cfg.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(cfg.objective_names)      # objective labels in optuna-dashboard
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG_FILE, cfg.to_dict())
    write_json(run_dir / RUN_FILE, {"name": name, "storage": storage_url})
    return Run(name, run_dir, cfg, storage_url, study)


def _comparable(cfg: RunConfig) -> dict:
    d = cfg.to_dict()
    d.pop("source", None)
    d.pop("base_dir", None)
    d.get("search", {}).pop("trials", None)
    d.get("search", {}).pop("seconds", None)
    d.get("search", {}).pop("baselines", None)
    d.get("search", {}).pop("bank", None)
    d.pop("final", None)
    return d


def _half_made(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """A study that a start killed between creating it and storing its config (no config, no trials): made again."""
    sid = storage.get_study_id_from_name(name)
    return "config" not in storage.get_study_user_attrs(sid) and not storage.get_all_trials(sid, deepcopy=False)


def _stored_config(storage: optuna.storages.BaseStorage, name: str) -> dict:
    sid = storage.get_study_id_from_name(name)
    attrs = storage.get_study_user_attrs(sid)
    if "config" not in attrs:
        raise ConfigError(f"study {name!r} holds no nasmtl run config (was it made by `nasmtl search`?)")
    return attrs["config"]


def join_run(name: str, storage_url: str, runs_root: Path = Path("runs")) -> Run:
    """Open study ``name`` in ``storage_url`` as a worker (artifacts go to ``runs_root/name``)."""
    check_run_name(name)
    storage = open_storage(storage_url)
    if name not in _study_names(storage):
        raise StorageError(f"no study {name!r} in {redact(storage_url)} "
                           f"(studies: {', '.join(_study_names(storage)) or 'none'})")
    cfg = RunConfig.from_dict(_stored_config(storage, name), f"study {name!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(name, storage, cfg, create=False)
    run_dir = runs_root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG_FILE, cfg.to_dict())
    if not (run_dir / RUN_FILE).exists():
        write_json(run_dir / RUN_FILE, {"name": name, "storage": storage_url})
    return Run(name, run_dir, cfg, storage_url, study)


def stderr_line(line: str) -> None:
    """Progress to stderr, one line per trial."""
    print(line, file=sys.stderr, flush=True)


def open_run(run_dir: Path, storage_url: str | None = None) -> Run:
    """An existing run from its directory (storage from ``run.json`` unless given), read-only: nothing is written."""
    run_dir = Path(run_dir)
    meta = run_dir / RUN_FILE
    if not meta.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {RUN_FILE})")
    info = json.loads(meta.read_text())
    storage = open_storage(storage_url or info.get("storage"), run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = info["name"]
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(f"{run_dir}: its storage holds no study {name!r}") from None
    cfg = RunConfig.from_dict(_stored_config(storage, name), f"study {name!r}")
    return Run(name, run_dir, cfg, storage_url or info.get("storage"), study)


def finalists(run: Run) -> list[optuna.trial.FrozenTrial]:
    """The Pareto members a finished search trains at the final budget (``[final] members``)."""
    from nasmtl.search.engine import pareto_trials
    from nasmtl.search.final import select_finalists

    front = pareto_trials(run.study.get_trials(deepcopy=False), run.config.directions)
    return select_finalists(front, run.config.objectives, run.config.final.members)


def run_final_phase(run: Run, progress: Callable[[str], None] | None = stderr_line, status: Any = None) -> list:
    """Train the run's finalists and baselines from scratch at the final budget (records in ``final/``);
    ``status``: a ``Progress`` for the live status line (models done, time left)."""
    from nasmtl.search.final import final_budget, run_final

    cfg = run.config
    chosen = finalists(run)
    if not chosen and not cfg.search.baselines:
        return []
    if progress is not None:
        progress(f"final training ({final_budget(cfg).describe()}): trial(s) "
                 f"{', '.join(str(t.number) for t in chosen) or 'none'} and the baselines")
    return run_final(run.dir, cfg, chosen, progress=progress, status=status)


def build_engine(run: Run, trials: int | None = None, seconds: float | None = None,
                 progress: Callable[[str], None] | None = stderr_line, status: Any = None) -> Engine:
    """The engine of a run (``trials``/``seconds`` override the config's search budget)."""
    from nasmtl.search.evaluate import build_evaluator, load_space

    cfg = run.config
    space = load_space(cfg)
    evaluator = build_evaluator(cfg, space)
    es = cfg.search.early_stopping
    pruner: Pruner | None = None
    if es.enabled:
        pruner = MultiObjectivePruner(cfg.objective_names, cfg.directions, es.min_trials, es.fraction, es.min_epoch)
    elif cfg.search.multi_fidelity:
        pruner = SuccessiveHalving(cfg.objective_names, cfg.directions, cfg.search.fidelity.eta,
                                   [o.bound for o in cfg.objectives])
    proposer = make_proposer(cfg.search.sampler, space, cfg.directions, cfg.search.seed, cfg.search.population,
                             cfg.search.predictor_skip)
    if cfg.search.priors:
        from nasmtl.priors.transfer import apply_priors

        apply_priors(run, space, proposer, getattr(evaluator, "data", None), progress)
    if cfg.search.start:
        from nasmtl.search.start import enqueue_start, start_designs

        designs = start_designs(space, cfg.search.start, cfg.resolve, cfg.search.seed, cfg.source)
        if not run.study.get_trials(deepcopy=False):
            enqueue_start(run.study, designs)
    budget = SearchBudget(trials if trials is not None else cfg.search.trials,
                          seconds if seconds is not None else cfg.search.seconds, cfg.search.max_failures)
    return Engine(run.study, space, evaluator, cfg.objectives, proposer, run.dir, budget, pruner,
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
