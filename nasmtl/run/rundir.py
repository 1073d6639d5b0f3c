"""The layout of a run directory (``runs/NAME``): the one module that knows its file and folder names.

Everything else asks a ``RunDir`` for a path, so the layout is written down once and existing run
directories keep opening. It imports nothing of nasmtl, so every layer (engine, final phase,
priors, commands) may use it without depending on the run lifecycle.

    run.json                      name and storage URL of the run
    config.json                   the resolved run config
    study.journal                 the optuna journal (when no --storage), study.journal.torn-DATE beside it
    priors.json                   the transferred priors (``[search] priors``)
    data.npz                      a map-style data set given to ``run_search(..., data=...)``
    data/                         the same, above 256 MB of inputs: x.npy, one TASK.npy per task, split.npy
    trials/NNNNN.json             one record per finished trial
    trials/NNNNN.onnx             a completed trial's model (NNNNN.fp32.onnx: before its quantization policy)
    pareto/NNNNN.onnx             links to the current Pareto members' models
    pareto.json                   the current Pareto members
    final/TAG/trial-NNNNN.*       final training at budget TAG (.json record, .onnx model); baseline-NAME.*
    report/, report.html          the report's pictures and page
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TORN_SUFFIX = ".torn-"
"""A journal's torn tail goes to ``JOURNAL + TORN_SUFFIX + DATE`` (``nasmtl.search.storage``)."""

_RUN = "run.json"
_CONFIG = "config.json"
_JOURNAL = "study.journal"
_PRIORS = "priors.json"
_DATA = "data.npz"
_DATA_DIR = "data"
_TRIALS = "trials"
_PARETO = "pareto"
_PARETO_FILE = "pareto.json"
_FINAL = "final"
_REPORT = "report"
_REPORT_HTML = "report.html"
_FOUND_PREFIX = "trial-"
_BASELINE_PREFIX = "baseline-"


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths of everything in it (nothing is created or read until asked)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, where: "str | os.PathLike[str] | RunDir") -> "RunDir":
        """``where`` as a ``RunDir`` (a path or a ``RunDir``)."""
        return where if isinstance(where, RunDir) else cls(Path(where))

    # ---- files of the run ------------------------------------------------------------------

    @property
    def run_file(self) -> Path:
        """``run.json``: the run's name and storage URL; its presence makes a folder a run directory."""
        return self.root / _RUN

    @property
    def config_file(self) -> Path:
        """``config.json``: the resolved run config."""
        return self.root / _CONFIG

    @property
    def journal(self) -> Path:
        """``study.journal``: the run's own optuna storage (when no ``--storage`` is given)."""
        return self.root / _JOURNAL

    @property
    def priors_file(self) -> Path:
        """``priors.json``: the priors transferred to the run."""
        return self.root / _PRIORS

    @property
    def data_file(self) -> Path:
        """``data.npz``: a map-style data set written into the run by ``run_search(..., data=...)``."""
        return self.root / _DATA

    @property
    def data_dir(self) -> Path:
        """``data/``: a map-style data set too large for memory, written as memory-mapped ``.npy`` files."""
        return self.root / _DATA_DIR

    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``run.json``)."""
        return self.run_file.is_file()

    def torn_journals(self) -> list[Path]:
        """The side files holding torn journal tails (``study.journal.torn-DATE``), oldest first."""
        return sorted(self.root.glob(f"{_JOURNAL}{TORN_SUFFIX}*"))

    # ---- trials ------------------------------------------------------------------------------

    @property
    def trials_dir(self) -> Path:
        """``trials/``: every finished trial's record and each completed trial's model."""
        return self.root / _TRIALS

    def trial_record(self, number: int) -> Path:
        """``trials/NNNNN.json``."""
        return self.root / self.trial_record_name(number)

    def trial_onnx(self, number: int) -> Path:
        """``trials/NNNNN.onnx``: the model the trial was measured on."""
        return self.root / self.trial_onnx_name(number)

    def trial_fp32_onnx(self, number: int) -> Path:
        """``trials/NNNNN.fp32.onnx``: a quantized trial's model before its policy was applied."""
        return self.trials_dir / f"{number:05d}.fp32.onnx"

    @staticmethod
    def trial_record_name(number: int) -> str:
        """``trials/NNNNN.json``, relative to the run directory."""
        return f"{_TRIALS}/{number:05d}.json"

    @staticmethod
    def trial_onnx_name(number: int) -> str:
        """``trials/NNNNN.onnx``, relative to the run directory (as trial records name it)."""
        return f"{_TRIALS}/{number:05d}.onnx"

    def trial_records(self) -> list[Path]:
        """The trial records on disk, by trial number."""
        return [self.trial_record(n) for n in self.trial_numbers()]

    def trial_numbers(self) -> list[int]:
        """The trials that have a record (``trials/NNNNN.json``), sorted."""
        return self._numbers("*.json")

    def trials_with_models(self) -> list[int]:
        """The trials that have a model (``trials/NNNNN.onnx``), sorted."""
        return self._numbers("*.onnx")

    def _numbers(self, pattern: str) -> list[int]:
        if not self.trials_dir.is_dir():
            return []
        return sorted(int(p.stem) for p in self.trials_dir.glob(pattern) if p.stem.isdigit())

    # ---- Pareto front ------------------------------------------------------------------------

    @property
    def pareto_dir(self) -> Path:
        """``pareto/``: links to the current Pareto members' models."""
        return self.root / _PARETO

    def pareto_onnx(self, number: int) -> Path:
        """``pareto/NNNNN.onnx``."""
        return self.pareto_dir / f"{number:05d}.onnx"

    def pareto_models(self) -> list[Path]:
        """The models in ``pareto/`` now."""
        return sorted(self.pareto_dir.glob("*.onnx")) if self.pareto_dir.is_dir() else []

    @property
    def pareto_file(self) -> Path:
        """``pareto.json``: the current Pareto members."""
        return self.root / _PARETO_FILE

    # ---- final training ----------------------------------------------------------------------

    @property
    def final_root(self) -> Path:
        """``final/``: one folder per final budget."""
        return self.root / _FINAL

    def final_dir(self, budget_tag: str) -> Path:
        """``final/TAG``: the records and models trained at one final budget."""
        return self.final_root / budget_tag

    def final_dirs(self) -> list[Path]:
        """The budget folders of ``final/`` (not the hidden temporary ones), sorted."""
        if not self.final_root.is_dir():
            return []
        return sorted(p for p in self.final_root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def final_record(self, budget_tag: str, name: str) -> Path:
        """``final/TAG/NAME.json``."""
        return self.final_dir(budget_tag) / f"{name}.json"

    def final_onnx(self, budget_tag: str, name: str) -> Path:
        """``final/TAG/NAME.onnx``."""
        return self.root / self.final_onnx_name(budget_tag, name)

    @staticmethod
    def final_onnx_name(budget_tag: str, name: str) -> str:
        """``final/TAG/NAME.onnx``, relative to the run directory (as final records name it)."""
        return f"{_FINAL}/{budget_tag}/{name}.onnx"

    @staticmethod
    def found_name(trial: int) -> str:
        """The final-record name of a found design: ``trial-00017``."""
        return f"{_FOUND_PREFIX}{trial:05d}"

    @staticmethod
    def baseline_name(name: str) -> str:
        """The final-record name of a baseline: ``baseline-two-branch-cnn``."""
        return f"{_BASELINE_PREFIX}{name}"

    @staticmethod
    def baseline_of(record_name: str) -> str:
        """The baseline's own name in a final-record name (``baseline-two-branch-cnn`` -> ``two-branch-cnn``)."""
        return record_name[len(_BASELINE_PREFIX):] if record_name.startswith(_BASELINE_PREFIX) else record_name

    # ---- report ------------------------------------------------------------------------------

    @property
    def report_dir(self) -> Path:
        """``report/``: the report's plots and network pictures."""
        return self.root / _REPORT

    @property
    def report_html(self) -> Path:
        """``report.html``: the self-contained report page."""
        return self.root / _REPORT_HTML

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, with ``/`` (as records name files)."""
        return Path(path).relative_to(self.root).as_posix()
