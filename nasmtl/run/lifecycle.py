"""A named search run: its directory, its study in a storage, and its config; start, resume, join, open.

``start_run`` creates a new run or resumes an existing one (the stored config wins on resume);
``join_run`` opens a study another process created (the config is read from the study's user
attrs, so a worker needs only the name and the storage URL); ``open_run`` reads a run as it is.
What a run then builds and runs (engine, final phase) is ``nasmtl.run.build``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from nasmtl.config import ConfigError, RunConfig
from nasmtl.files import write_json
from nasmtl.run.rundir import RunDir
from nasmtl.search.samplers import make_sampler
from nasmtl.search.storage import StorageError, open_storage, redact


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
    files = RunDir(run_dir)
    if storage_url is None and files.is_run():
        storage_url = json.loads(files.run_file.read_text()).get("storage")
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
    write_json(files.config_file, cfg.to_dict())
    write_json(files.run_file, {"name": name, "storage": storage_url})
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
    files = RunDir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(files.config_file, cfg.to_dict())
    if not files.run_file.exists():
        write_json(files.run_file, {"name": name, "storage": storage_url})
    return Run(name, run_dir, cfg, storage_url, study)


def open_run(run_dir: Path, storage_url: str | None = None) -> Run:
    """An existing run from its directory (storage from ``run.json`` unless given), read-only: nothing is written."""
    run_dir = Path(run_dir)
    meta = RunDir(run_dir).run_file
    if not meta.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {meta.name})")
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
