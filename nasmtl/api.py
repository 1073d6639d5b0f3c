"""The Python API: run a search, read what it found, train and export a found model.

    import nasmtl

    run = nasmtl.run_search("search_spaces/example_run.toml", name="exp1")   # a RunConfig, or None: the default
    for member in run.pareto():
        print(member.trial, member.values, member.design)
    rec = run.retrain(run.pareto()[0].trial, steps=600)                  # from scratch, measured on test
    run.export(rec, "m.onnx")
    again = nasmtl.load_run("runs/exp1")

``run_search(..., data=dataset)`` searches on a map-style dataset (``torch.utils.data.Dataset``:
``dataset[i] == (input, {task: target})``, or ``{"train": ds, "val": ds, "test": ds}``), written once
into the run as ``data.npz`` (above 256 MB of inputs: the memory-mapped ``.npy`` folder ``data/``;
``nasmtl.data.mapstyle``). ``run_search(..., augment=fn)`` augments every training batch of the run.

Errors are the CLI's: ``ConfigError``, ``DataError``, ``StorageError``, ``FinalTrainingError``, ...
with the file and place in their message; all derive from ``nasmtl.NasmtlError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nasmtl.config import ConfigError, RunConfig, default_config, load_config
from nasmtl.run.rundir import RunDir
from nasmtl.search.final import FinalRecord

if TYPE_CHECKING:
    from nasmtl.data.augment import Augment
    from nasmtl.run.lifecycle import Run


@dataclass(frozen=True)
class Member:
    """One Pareto member of a run: its trial, objective values by name and design string."""

    trial: int
    values: dict[str, float]
    design: str


@dataclass
class SearchRun:
    """A search run on disk (``runs/NAME``) and its optuna study."""

    dir: Path
    storage: str | None = None
    augment: Augment | None = None
    """The batch function ``run_search(augment=...)`` gave; ``retrain`` trains with it too (it is not stored on disk)."""

    @property
    def _run(self) -> "Run":
        """The run opened afresh (so a run another process is writing reads as it is now)."""
        from nasmtl.run.lifecycle import open_run

        return open_run(self.dir, self.storage)

    @property
    def config(self) -> RunConfig:
        """The run's resolved config."""
        return self._run.config

    def pareto(self) -> list[Member]:
        """The Pareto members (top fidelity, feasible), by trial number."""
        from nasmtl.search.engine import pareto_trials

        run = self._run
        names = run.config.objective_names
        return [Member(t.number, dict(zip(names, t.values)), t.user_attrs.get("design", ""))
                for t in pareto_trials(run.study.get_trials(deepcopy=False), run.config.directions)]

    def final(self) -> list[FinalRecord]:
        """The final records of the run's own final budget (found models and baselines)."""
        from nasmtl.search.final import final_budget, load_final

        return load_final(self.dir).get(final_budget(self.config).tag, [])

    def retrain(self, trial: int, *, epochs: float | None = None, steps: int | None = None,
                batch_size: int | None = None, lr: float | None = None, lr_schedule: str | None = None,
                device: str | None = None, baselines: bool = False, force: bool = False) -> FinalRecord:
        """Train trial ``trial``'s design from scratch at the final budget (overrides as given); its record."""
        from nasmtl.search.evaluate import extra_augment
        from nasmtl.search.final import final_budget, run_final
        from nasmtl.train import resolve_device

        run = self._run
        done = {t.number: t for t in run.study.get_trials(deepcopy=False)
                if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs}
        if trial not in done:
            raise ConfigError(f"{self.dir}: no completed trial {trial} (completed: "
                              f"{', '.join(map(str, sorted(done))) or 'none'})")
        budget = final_budget(run.config, epochs, steps, batch_size, lr, lr_schedule)
        dev = str(resolve_device(device)) if device is not None else None
        with extra_augment(self.augment):
            return run_final(self.dir, run.config, [done[trial]], with_baselines=baselines, budget=budget,
                             device=dev, force=force)[0]

    def export(self, what: FinalRecord | int, path: str | Path) -> Path:
        """Copy a final model (a record) or a trial's own search model (a trial number) to ``path``."""
        import shutil

        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, FinalRecord):
            src = self.dir / what.onnx
        else:
            src = RunDir(self.dir).trial_onnx(int(what))
        if not src.is_file():
            raise ConfigError(f"{self.dir}: no model file {src.relative_to(self.dir)}")
        shutil.copyfile(src, dest)
        return dest


def run_search(config: RunConfig | str | Path | None = None, *, data: Any = None, name: str | None = None,
               storage: str | None = None, runs: str | Path = "runs", trials: int | None = None,
               final: bool = True, progress: Callable[[str], None] | None = None,
               augment: Augment | None = None) -> SearchRun:
    """Run (or resume, with ``name`` of an existing run and no config) a search and its final phase.

    ``data``: a map-style dataset (split by the config's ``val_fraction`` / ``test_fraction`` /
    ``seed``, default 0.1 / 0.1 / 0) or a dict of ``train``, ``val`` and ``test`` datasets; it replaces
    the config's ``[data]`` source. ``augment``: a function ``(batch, generator) -> batch`` applied to
    every training batch of the trials and the final phase, after ``[train] augment``'s built-ins.
    """
    import time

    from nasmtl.data.augment import checked
    from nasmtl.search.evaluate import extra_augment
    from nasmtl.run.build import build_engine, run_engine, run_final_phase
    from nasmtl.run.lifecycle import check_run_name, discard_run, start_run

    cfg = config if isinstance(config, RunConfig) or config is None else load_config(config)
    name = name or time.strftime("search-%Y%m%d-%H%M%S")
    check_run_name(name)
    root = Path(runs)
    if cfg is None and not RunDir(root / name).config_file.exists() and storage is None:
        cfg = default_config()
    fresh = not (root / name).exists()
    with extra_augment(checked(augment, "run_search(augment=...)")):
        try:
            if data is not None:
                cfg = _with_dataset(cfg or default_config(), data, root / name, fresh)
            run = start_run(cfg, name, storage, root)
            engine = build_engine(run, trials, None, progress)
        except BaseException:
            if fresh:
                discard_run(root / name, storage, name)
            raise
        summary = run_engine(run, progress=progress, engine=engine)
        if final and summary.completed:
            run_final_phase(run, progress=progress, engine=engine)
    return SearchRun(run.dir, storage, augment)


def _with_dataset(cfg: RunConfig, data: Any, run_dir: Path, fresh: bool) -> RunConfig:
    """``cfg`` reading ``data`` from the run's ``data.npz`` (or, for large data, the ``.npy`` folder ``data/``;
    written now, and a resume must pass the same data)."""
    from nasmtl.data.mapstyle import store

    files = RunDir(run_dir)
    spec = store(data, files.data_file.resolve(), files.data_dir.resolve(), fresh)
    keep = {k: v for k, v in cfg.data.items() if k in ("val_fraction", "test_fraction", "seed")}
    name = type(data).__name__ if not isinstance(data, dict) else type(data["train"]).__name__
    return dataclasses.replace(cfg, data={**spec, "name": name, **keep})


def load_run(path: str | Path, storage: str | None = None) -> SearchRun:
    """An existing run directory (``runs/NAME``)."""
    p = Path(path)
    if not RunDir(p).is_run():
        raise ConfigError(f"{p}: not a run directory (no {RunDir(p).run_file.name})")
    return SearchRun(p, storage)
