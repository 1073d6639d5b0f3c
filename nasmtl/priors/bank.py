"""The task-model bank: every evaluated design with its task, space, objectives and canonical string.

A record says "design D of space S scored these objectives on task T". Records come from nasmtl
runs (a run directory, or any optuna storage holding nasmtl studies: journal file, SQLite,
PostgreSQL) and from benchmark tables (NAS-Bench-201, NAS-Bench-Graph, TransNAS-Bench-101, the
GraphGym design bank of AutoTransfer). ``score`` orders the designs of one task (higher is
better): a table's validation metric, or for a multi-objective run minus the Pareto rank plus a
tie-break below 0.5 (mean percentile of the objectives), so the Pareto front scores highest.

A bank is kept as a JSON-lines file (default ``runs/bank.jsonl``, next to the run directories):
one ``{"type": "record", ...}`` per line, plus ``{"type": "embedding", "task", "kind", "vector"}``
lines for task embeddings. ``update_from_run`` replaces a run's records by its current trials, so
the bank stays current as runs finish (``nasmtl search`` calls it at the end of every run).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nasmtl.errors import NasmtlError
from nasmtl.files import write_atomic
from nasmtl.resources import benchmarks_dir
from nasmtl.run.rundir import RunDir

SHARED_BENCHMARKS = benchmarks_dir()
"""The read-only benchmark result tables: ``$NASMTL_BENCHMARKS``, else a checkout's ``../shared/benchmarks``."""

TRANSNAS_MICRO = "transnas_bench101_micro_zc.json"
GRAPHGYM_BANK = "autotransfer_graphgym_design_bank_v1.csv"
BANK_NAME = "bank.jsonl"

TRANSNAS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
"""TransNAS-Bench-101 micro cell ops by index (its cell is NAS-Bench-201's with 4 ops)."""

GRAPHGYM_DIMS = ("batch", "l_pre", "l_mp", "l_post", "stage", "bn", "act", "drop", "agg", "optim", "lr", "epoch")
"""The design dimensions of the GraphGym design bank."""


class BankError(NasmtlError, ValueError):
    """A bank file, run or table that cannot be read; the message names the file and the place."""


@dataclass(slots=True)
class Record:
    """One evaluated design: task id, space name, canonical string, decisions, objectives, score, source."""

    task: str
    space: str
    design: str
    choices: dict[str, str]
    objectives: dict[str, float]
    score: float
    source: str

    def to_json(self) -> dict[str, Any]:
        """A plain JSON object (one bank line)."""
        return {"type": "record", "task": self.task, "space": self.space, "design": self.design,
                "choices": self.choices, "objectives": self.objectives, "score": self.score, "source": self.source}


@dataclass
class Bank:
    """Records of evaluated designs by task, and task embeddings (``{task: {kind: vector}}``)."""

    records: list[Record] = field(default_factory=list)
    embeddings: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    path: Path | None = None

    # ---- queries ----------------------------------------------------------------------------

    def add(self, records: Iterable[Record]) -> "Bank":
        """Append records; returns the bank."""
        self.records.extend(records)
        return self

    def merge(self, other: "Bank") -> "Bank":
        """Add another bank's records and embeddings; returns this bank."""
        self.records.extend(other.records)
        for t, kinds in other.embeddings.items():
            self.embeddings.setdefault(t, {}).update(kinds)
        return self

    def tasks(self, space: str | None = None) -> list[str]:
        """Task ids (of one space when given), in order of first appearance."""
        seen: dict[str, None] = {}
        for r in self.records:
            if space is None or r.space == space:
                seen.setdefault(r.task, None)
        return list(seen)

    def spaces(self) -> list[str]:
        """Space names in the bank."""
        return list(dict.fromkeys(r.space for r in self.records))

    def query(self, task: str, space: str | None = None) -> list[Record]:
        """The records of one task (of one space when given)."""
        return [r for r in self.records if r.task == task and (space is None or r.space == space)]

    def by_task(self, space: str | None = None) -> dict[str, list[Record]]:
        """All records grouped by task (of one space when given)."""
        out: dict[str, list[Record]] = defaultdict(list)
        for r in self.records:
            if space is None or r.space == space:
                out[r.task].append(r)
        return dict(out)

    def best(self, task: str, n: int = 1, space: str | None = None) -> list[Record]:
        """The ``n`` highest-scoring records of a task."""
        return sorted(self.query(task, space), key=lambda r: -r.score)[:n]

    def without(self, tasks: Sequence[str]) -> "Bank":
        """A bank without the records and embeddings of ``tasks`` (for leave-one-out studies)."""
        drop = set(tasks)
        return Bank([r for r in self.records if r.task not in drop],
                    {t: dict(v) for t, v in self.embeddings.items() if t not in drop}, self.path)

    def set_embedding(self, task: str, kind: str, vector: Sequence[float]) -> None:
        """Store a task embedding of one kind."""
        self.embeddings.setdefault(task, {})[kind] = [float(v) for v in vector]

    # ---- files ------------------------------------------------------------------------------

    def save(self, path: str | Path | None = None) -> Path:
        """Write the bank as JSON lines (atomically); returns the path."""
        p = Path(path or self.path or BANK_NAME)
        p.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r.to_json()) for r in self.records]
        lines += [json.dumps({"type": "embedding", "task": task, "kind": kind, "vector": vec})
                  for task, kinds in self.embeddings.items() for kind, vec in kinds.items()]
        write_atomic(p, "".join(line + "\n" for line in lines))
        self.path = p
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Bank":
        """Read a JSON-lines bank; a bad line raises ``BankError`` naming the file and line."""
        p = Path(path)
        if not p.is_file():
            raise BankError(f"{p}: no such bank file")
        bank = cls(path=p)
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BankError(f"{p}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise BankError(f"{p}, line {n}: expected a JSON object, got {type(obj).__name__}")
                kind = obj.get("type", "record")
                try:
                    if kind == "record":
                        bank.records.append(_record_of(obj))
                    elif kind == "embedding":
                        bank.set_embedding(str(obj["task"]), str(obj["kind"]), _floats(obj["vector"], "vector"))
                    else:
                        raise ValueError(f"unknown line type {kind!r} (record or embedding)")
                except KeyError as e:
                    raise BankError(f"{p}, line {n}: {kind} line lacks the key {e.args[0]!r}") from None
                except (TypeError, ValueError) as e:
                    raise BankError(f"{p}, line {n}: {e}") from None
        return bank

    @classmethod
    def open(cls, path: str | Path) -> "Bank":
        """The bank at ``path``, or an empty bank that will be saved there."""
        p = Path(path)
        return cls.load(p) if p.exists() else cls(path=p)

    # ---- keeping it current -----------------------------------------------------------------

    def replace_source(self, source: str, records: Iterable[Record]) -> int:
        """Drop the records of ``source`` and add ``records``; returns how many were added."""
        new = list(records)
        self.records = [r for r in self.records if r.source != source] + new
        return len(new)

    def update_from_run(self, run_dir: str | Path, storage_url: str | None = None) -> int:
        """Replace the records of a run directory by its current trials; returns the number of records."""
        recs = records_from_run(run_dir, storage_url)
        return self.replace_source(run_source(run_dir), recs)


# ---- record helpers -------------------------------------------------------------------------


def _floats(v: Any, what: str) -> list[float]:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise TypeError(f"{what} must be a list of numbers")
    return [float(x) for x in v]


def _record_of(obj: Mapping[str, Any]) -> Record:
    ch, ob = obj["choices"], obj["objectives"]
    if not isinstance(ch, dict) or not all(isinstance(v, str) for v in ch.values()):
        raise TypeError("choices must be an object of strings")
    numbers = isinstance(ob, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ob.values())
    if not numbers:
        raise TypeError("objectives must be an object of numbers")
    score = obj["score"]
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        raise TypeError(f"score must be a finite number, got {score!r}")
    for k in ("task", "space", "design", "source"):
        if not isinstance(obj[k], str) or not obj[k]:
            raise TypeError(f"{k} must be a non-empty string")
    return Record(obj["task"], obj["space"], obj["design"], dict(ch), {k: float(v) for k, v in ob.items()},
                  float(score), obj["source"])


def percentiles(values: Sequence[float]) -> np.ndarray:
    """Rank-normalised values in [0, 1] (ties share their mean rank; a single value gives 0.5)."""
    v = np.asarray(values, dtype=float)
    if len(v) <= 1:
        return np.full(len(v), 0.5)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for u in np.unique(v):
        m = v == u
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return ranks / (len(v) - 1)


def pareto_scores(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """Scores of multi-objective results: minus the Pareto rank, plus 0.5 x the mean objective percentile (< 0.5)."""
    from nasmtl.search.pareto import non_dominated_sort, to_minimization

    if not values:
        return []
    pts = to_minimization([list(v) for v in values], directions)
    rank = np.zeros(len(pts))
    for r, front in enumerate(non_dominated_sort(pts)):
        rank[front] = r
    pct = np.mean([percentiles(-pts[:, j]) for j in range(pts.shape[1])], axis=0)
    return [float(-rank[i] + 0.49 * pct[i]) for i in range(len(pts))]


# ---- runs and storages ----------------------------------------------------------------------


def run_source(run_dir: str | Path) -> str:
    """The source label of a run directory's records."""
    return f"run:{Path(run_dir).resolve()}"


def task_id(cfg: Any) -> str:
    """The task id of a run config: the data set and its searched tasks, e.g. ``multimnist:left+right``."""
    data = dict(cfg.data)
    name = data.get("name") or Path(str(data.get("path", data.get("kind", "data")))).stem
    return f"{name}:{'+'.join(cfg.tasks) if cfg.tasks else 'all'}"


def space_name(cfg: Any) -> str:
    """The ``SearchSpace.name`` of a run config's space, read without building the space."""
    s = cfg.space
    if s.grammar is not None:
        return f"grammar:{Path(s.grammar).stem}"
    path = cfg.resolve(s.cell)
    try:
        import tomllib

        name = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError):
        name = None
    return str(name or Path(s.cell).stem)


def records_from_study(study: Any, source: str) -> list[Record]:
    """Records of the trained, completed trials of one nasmtl study (its config in the study's user attrs)."""
    from optuna.trial import TrialState

    from nasmtl.config import RunConfig

    if "config" not in study.user_attrs:
        raise BankError(f"{source}: study {study.study_name!r} holds no nasmtl run config")
    cfg = RunConfig.from_dict(study.user_attrs["config"], f"study {study.study_name!r}")
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "duplicate_of" not in t.user_attrs and "design" in t.user_attrs and t.values is not None]
    scores = pareto_scores([t.values for t in trials], cfg.directions)
    task, sp = task_id(cfg), space_name(cfg)
    return [Record(task, sp, str(t.user_attrs["design"]),
                   {str(k): str(v) for k, v in t.user_attrs.get("choices", {}).items()},
                   dict(zip(cfg.objective_names, map(float, t.values))), s, source)
            for t, s in zip(trials, scores)]


def records_from_storage(url: str, study_name: str | None = None, source: str | None = None) -> list[Record]:
    """Records of every nasmtl study (or one) in an optuna storage: journal file, ``sqlite:///``, ``postgresql://``."""
    import optuna

    from nasmtl.search.storage import open_storage, redact

    if "://" not in url and not Path(url).is_file():
        raise BankError(f"{url}: no such journal file")
    storage = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name is not None:
        if study_name not in names:
            raise BankError(f"{redact(url)}: no study {study_name!r} (studies: {', '.join(names) or 'none'})")
        names = [study_name]
    out: list[Record] = []
    for n in names:
        study = optuna.load_study(study_name=n, storage=storage)
        if "config" in study.user_attrs:
            out += records_from_study(study, source or f"storage:{redact(url)}#{n}")
    return out


def _read_json(path: Path) -> Any:
    """A JSON file's content; invalid JSON is one ``BankError`` naming the file and line."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BankError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def records_from_run(run_dir: str | Path, storage_url: str | None = None) -> list[Record]:
    """Records of a run directory: read from its storage (``run.json``), else from ``trials/*.json``."""
    d = RunDir(Path(run_dir))
    meta = d.run_file
    if not meta.is_file():
        raise BankError(f"{d.root}: not a run directory (no {meta.name})")
    info = _read_json(meta)
    url = storage_url or info.get("storage")
    source = run_source(d.root)
    if url is None and d.journal.is_file():
        url = str(d.journal)
    if url is not None:
        try:
            return records_from_storage(url, info.get("name"), source)
        except Exception:
            if not d.trials_dir.is_dir():
                raise
    return _records_from_trial_files(d, source)


def _records_from_trial_files(d: RunDir, source: str) -> list[Record]:
    from nasmtl.config import RunConfig

    cfg_file = d.config_file
    if not cfg_file.is_file():
        raise BankError(f"{d.root}: no {cfg_file.name} to read the run's task and objectives from")
    cfg = RunConfig.from_dict(_read_json(cfg_file), str(cfg_file))
    rows = []
    for f in d.trial_records():
        rec = _read_json(f)
        if rec.get("state") == "complete" and rec.get("design") and all(n in rec.get("objectives", {})
                                                                        for n in cfg.objective_names):
            rows.append(rec)
    scores = pareto_scores([[r["objectives"][n] for n in cfg.objective_names] for r in rows], cfg.directions)
    task, sp = task_id(cfg), space_name(cfg)
    return [Record(task, sp, r["design"], dict(r.get("choices") or {}),
                   {n: float(r["objectives"][n]) for n in cfg.objective_names}, s, source)
            for r, s in zip(rows, scores)]


# ---- benchmark tables -----------------------------------------------------------------------


def shared_file(name: str, folder: str | Path | None = None) -> Path:
    """A file of ``../shared/benchmarks`` (or ``folder``); a clear ``BankError`` when it is missing."""
    base = Path(folder) if folder is not None else SHARED_BENCHMARKS
    p = base / name
    if not p.is_file():
        raise BankError(f"{p}: benchmark file not found (the shared benchmarks folder holds it; "
                        "set NASMTL_BENCHMARKS to the folder of the tables)")
    return p


def records_from_table(table: Any, datasets: Sequence[str] | None = None, metric: str = "val_acc") -> list[Record]:
    """Records of a benchmark table (``load_table`` name or ``Table``): task ``TABLE/DATASET``, score = ``metric``."""
    from nasmtl.nasbench import load_table

    tab = load_table(table) if isinstance(table, str) else table
    sp = tab.space
    designs, choices = [], []
    for k in tab.keys:
        x = tab.design_of(k)
        designs.append(sp.encode(x))
        choices.append(sp.choices(x))
    out = []
    for ds in datasets or tab.datasets:
        col = tab.column(ds, metric)
        for i, v in enumerate(col):
            if np.isfinite(v):
                out.append(Record(f"{tab.name}/{ds}", sp.name, designs[i], choices[i], {metric: float(v)},
                                  float(v), f"table:{tab.name}"))
    return out


def transnas_key(arch: str, where: str = "TransNAS-Bench-101") -> str:
    """The 6-digit key of a TransNAS cell string such as ``"(1, 0, 0, 2, 1, 0)"``."""
    digits = [p.strip() for p in arch.strip().strip("()").split(",")]
    if len(digits) != 6 or any(d not in ("0", "1", "2", "3") for d in digits):
        raise BankError(f"{where}: not a micro cell {arch!r} (6 ops 0-3)")
    return "".join(digits)


def transnas_choices(key: str) -> dict[str, str]:
    """The decisions of a TransNAS micro cell key (NAS-Bench-201 edge names and op names)."""
    return {f"edge_{i}": TRANSNAS_OPS[int(c)] for i, c in enumerate(key)}


def read_transnas(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """TransNAS-Bench-101 micro: ``{task: {6-digit cell key: val_accuracy}}`` (higher is better for all 7 tasks)."""
    p = Path(path) if path is not None else shared_file(TRANSNAS_MICRO)
    if not p.is_file():
        raise BankError(f"{p}: TransNAS-Bench-101 file not found")
    raw = _read_json(p)
    out: dict[str, dict[str, float]] = {}
    for task, cells in raw.items():
        if not isinstance(cells, dict):
            raise BankError(f"{p}: task {task!r} is not an object of cells")
        out[task] = {}
        for arch, row in cells.items():
            v = row.get("val_accuracy") if isinstance(row, dict) else None
            if not isinstance(v, (int, float)):
                raise BankError(f"{p}: task {task!r}, cell {arch!r} has no numeric val_accuracy")
            out[task][transnas_key(arch, f"{p}: task {task!r}")] = float(v)
    return out


def records_from_transnas(path: str | Path | None = None) -> list[Record]:
    """Records of TransNAS-Bench-101 micro (7 Taskonomy tasks x about 711 cells): task ``transnas/TASK``."""
    data = read_transnas(path)
    src = f"transnas:{path or shared_file(TRANSNAS_MICRO)}"
    return [Record(f"transnas/{t}", "transnas-micro", k, transnas_choices(k), {"val_acc": v}, v, src)
            for t, cells in data.items() for k, v in cells.items()]


def records_from_graphgym(path: str | Path | None = None) -> list[Record]:
    """AutoTransfer's GraphGym design bank: task ``graphgym/DATASET/TASK[/FEATURE/LABEL]``, score = accuracy."""
    p = Path(path) if path is not None else shared_file(GRAPHGYM_BANK)
    if not p.is_file():
        raise BankError(f"{p}: GraphGym design bank not found")
    out = []
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("dataset", "task", "accuracy", *GRAPHGYM_DIMS) if c not in (reader.fieldnames or [])]
        if missing:
            raise BankError(f"{p}, line 1: missing column(s) {', '.join(missing)}")
        for n, row in enumerate(reader, 2):
            try:
                acc = float(row["accuracy"])
            except ValueError:
                raise BankError(f"{p}, line {n}: accuracy {row['accuracy']!r} is not a number") from None
            parts = [row["dataset"], row["task"]] + [row[c] for c in ("feature", "label") if row.get(c)]
            ch = {d: row[d] for d in GRAPHGYM_DIMS}
            design = ",".join(f"{d}={ch[d]}" for d in GRAPHGYM_DIMS)
            obj = {"accuracy": acc}
            for extra in ("params", "time_iter"):
                if row.get(extra):
                    obj[extra] = float(row[extra])
            out.append(Record("graphgym/" + "/".join(parts), "graphgym", design, ch, obj, acc, f"graphgym:{p}"))
    return out


def benchmark_bank(which: Sequence[str] = ("nb201", "nbgraph", "transnas", "graphgym")) -> Bank:
    """A bank of the benchmark tables named in ``which`` (nb201/nbgraph need the ``bench`` extra)."""
    bank = Bank()
    for w in which:
        if w in ("nb201", "nbgraph"):
            bank.add(records_from_table(w))
        elif w == "transnas":
            bank.add(records_from_transnas())
        elif w == "graphgym":
            bank.add(records_from_graphgym())
        else:
            raise BankError(f"unknown benchmark bank {w!r} (nb201, nbgraph, transnas, graphgym)")
    return bank


def local_bank_path(runs_root: str | Path = "runs") -> Path:
    """The local bank that ``priors = "auto"`` reads and finished runs update: ``RUNS_ROOT/bank.jsonl``."""
    env = os.environ.get("NASMTL_BANK")
    return Path(env) if env else Path(runs_root) / BANK_NAME
