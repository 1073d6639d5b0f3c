"""Run configs (TOML): data set and tasks, the space, objectives, training and search budgets.

``load_config(path)`` reads a file, ``default_config()`` the embedded default that ``nasmtl search``
runs with no argument. Every unknown key or wrong type raises ``ConfigError`` naming the key and
the file. ``RunConfig.to_dict``/``from_dict`` round-trip the resolved config (stored in the run
directory and in the study, so a worker needs only the study name and the storage URL).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nasmtl.errors import NasmtlError
from nasmtl.resources import shipped_roots

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class ConfigError(NasmtlError, ValueError):
    """A run config that cannot be used; the message names the file and the key."""


STATIC_OBJECTIVES = ("latency_ms", "bytes", "macs", "params", "delta_m")
"""Objectives measured on the exported model, and Δm (``nasmtl.data.delta_m``); the others are ``task.metric``
names (or ``task.params``/``task.macs``/``task.bytes``/``task.latency_ms``: the cost of one task's path)."""

from nasmtl.arch.ir import HEAD_POOLS

LAYOUT_MODES = ("search", "shared", "separate")
"""``[space] layout`` values besides a fixed layout string (``left+right/left|right``)."""

LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules of ``[train]`` / ``[final] lr_schedule`` (``nasmtl.train.scheduled_lr``)."""

SAMPLERS = ("random", "nsga2", "nsga3", "tpe", "evolution", "predictor")

DEFAULT_TOML = """\
# The embedded default run of `nasmtl search`: MultiMNIST (two digit tasks), the family of the hand-designed
# two-branch CNN (grammars/convnet.lark) with layout and quantization co-searched, started from the hand design.
# Trials train under a successive-halving schedule (40, 120, 360 steps); the finalists and the baselines are
# then trained from scratch for 600 steps and measured on the test split. About ten minutes on two CPU cores.
[data]
name = "multimnist"
n_train = 20000
n_val = 1000
n_test = 2000

[space]
grammar = "grammars/convnet.lark"
max_macs = 20_000_000                   # the hand CNN has 18.6 M: keeps every trial's training short
head = "grid"                           # heads keep a coarse 2x2 map: which digit is left or right
layout = "search"                       # where the two tasks share stages and where they branch
quant = "search_spaces/quant.toml"      # a precision per stage (fp32, int8 static/dynamic, int4 weights)

[[objectives]]
name = "left.accuracy"
direction = "maximize"
bound = 0.12                            # better than chance (0.1): non-learners are kept, never on the front
ref = 0.0

[[objectives]]
name = "right.accuracy"
direction = "maximize"
bound = 0.12
ref = 0.0

[[objectives]]
name = "bytes"                          # of the quantized ONNX file as shipped (MACs do not see quantization)
direction = "minimize"
ref = 4_000_000

[train]                                 # a trial's training at the top rung of the schedule
steps = 360
batch_size = 128
lr = 0.001
device = "auto"

[search]
sampler = "evolution"
trials = 30
seed = 0
trial_timeout = 900                     # seconds: a safety limit for a runaway design, far above any trial of this space
population = 8
start = ["grammars/baselines/two_branch_cnn.txt"]
baselines = ["auto"]                    # the hand CNN and grammars/baselines/ (ResNet-, ViT-, Mixer-like)

[search.fidelity]                       # successive halving: rungs of 40, 120 and 360 steps
rungs = 3
eta = 3

[final]                                 # finalists and baselines: from scratch, the same budget, test split
steps = 600
members = 3
"""


@dataclass
class Objective:
    """One objective: ``task.metric`` or one of ``STATIC_OBJECTIVES``, its direction and optional bound.

    ``bound`` is a constraint (maximised: value >= bound; minimised: value <= bound); trials that
    break it are kept but never Pareto members. ``ref`` is the hypervolume reference point
    (default: the bound, or 0 for a maximised task metric).
    """

    name: str
    direction: str = "maximize"
    bound: float | None = None
    ref: float | None = None

    @property
    def reference(self) -> float:
        """The hypervolume reference value of this objective."""
        if self.ref is not None:
            return float(self.ref)
        if self.bound is not None:
            return float(self.bound)
        return 0.0

    def feasible(self, value: float) -> bool:
        """Whether ``value`` meets the bound (always, without one)."""
        if self.bound is None:
            return True
        return value >= self.bound if self.direction == "maximize" else value <= self.bound

    @property
    def task(self) -> str | None:
        """The task of a per-task objective (``None`` for a static one)."""
        return None if self.name in STATIC_OBJECTIVES else self.name.split(".", 1)[0]


@dataclass
class SpaceConfig:
    """The search space: exactly one of a grammar file or a cell-space file, with optional limits.

    ``arch`` fixes the architecture to one string of that space. ``layout``: ``"shared"`` (default),
    ``"separate"``, ``"search"`` or a fixed layout string; ``stages``: the number of layout stages
    (default: the most top-level stages among a few sampled designs). ``quant``: off (``false``,
    default), ``true`` or a quantization-space file (searched), or one precision for every group.
    """

    grammar: str | None = None
    cell: str | None = None
    max_macs: int | None = None
    max_params: int | None = None
    max_depth: int | None = None
    max_nodes: int | None = None
    arch: str | None = None
    layout: str = "shared"
    stages: int | None = None
    quant: str | bool | None = None
    head: str = "global"
    """How task heads pool an image map: ``"global"`` or ``"grid"`` (about 2x2, position kept)."""


@dataclass
class TrainSettings:
    """Training of each candidate (see ``nasmtl.train.TrainConfig``)."""

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    loss_weighting: str = "equal"
    lr_schedule: str = "constant"
    """``constant`` or ``cosine`` (the rate falls to 0 over the budget's steps; ``nasmtl.train.scheduled_lr``)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` (``nasmtl.train.resolve_device``)."""
    augment: dict[str, Any] | None = None
    """Built-in augmentations of training batches, e.g. ``{shift = 2, noise = 0.05}`` (``nasmtl.data.augment``)."""


@dataclass
class Fidelity:
    """Successive halving over training steps: many short trainings, the best by Pareto rank trained longer.

    The ``[train]`` budget is the top rung; the rungs below it are that budget divided by ``eta``,
    ``eta**2``, ... (``rungs`` in all). A trial that reaches a rung goes on to the next only when it is
    in the best ``1/eta`` of the trials measured at that rung; otherwise it is measured and completed
    there. ``enabled`` unset: on, unless multi-objective early stopping is enabled instead.
    """

    enabled: bool | None = None
    rungs: int = 3
    eta: float = 3.0


@dataclass
class FinalSettings:
    """Final training: the finalists of a search and its baselines, trained from scratch with this budget.

    Budget keys not given are the ``[train]`` ones. ``members`` Pareto members are retrained when the
    search ends (0: none; ``nasmtl retrain`` does it later), measured on the test split.
    """

    epochs: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_schedule: str | None = None
    members: int = 3


@dataclass
class EarlyStopping:
    """Multi-objective early stopping: stop a trial dominated at an epoch by enough finished trials."""

    enabled: bool = False
    min_trials: int = 4
    fraction: float = 0.5
    min_epoch: int = 0


@dataclass
class SearchSettings:
    """The search budget (trials and/or wall seconds of one invocation), sampler and per-trial limits."""

    sampler: str = "evolution"
    trials: int | None = 20
    seconds: float | None = None
    seed: int = 0
    trial_timeout: float | None = 900.0
    population: int = 16
    latency_runs: int = 20
    max_failures: int = 20
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    priors: str | bool = False
    """Transferred design priors: ``"auto"`` (the local bank ``runs/bank.jsonl``), a bank file, or false."""
    start: list[str] = field(default_factory=list)
    """Designs a fresh search trains first: design strings or files holding one (``nasmtl.search.start``)."""
    predictor_skip: bool = False
    """``predictor`` sampler, several objectives: decline candidates predicted unable to reach the front."""
    bank: bool = True
    """Add the finished run's trials to the local bank of past searches (``runs/bank.jsonl``) that
    ``priors = "auto"`` reads; independent of whether this run uses priors."""
    fidelity: Fidelity = field(default_factory=Fidelity)
    baselines: list[str] = field(default_factory=lambda: ["auto"])
    """Hand designs trained with the finalists' budget: built-in names, design strings or files (``nasmtl.search.baselines``)."""

    @property
    def multi_fidelity(self) -> bool:
        """Whether the successive-halving schedule is on (see ``Fidelity.enabled``)."""
        if self.fidelity.enabled is None:
            return not self.early_stopping.enabled
        return self.fidelity.enabled


@dataclass
class RunConfig:
    """A whole run: what ``nasmtl search`` needs besides a name and a storage."""

    data: dict[str, Any]
    space: SpaceConfig
    objectives: list[Objective]
    tasks: list[str] | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    final: FinalSettings = field(default_factory=FinalSettings)
    source: str = "<default>"
    base_dir: str = "."

    @property
    def directions(self) -> list[str]:
        """Directions of the objectives in order."""
        return [o.direction for o in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        """Names of the objectives in order."""
        return [o.name for o in self.objectives]

    def reference_point(self) -> list[float]:
        """The hypervolume reference point."""
        return [o.reference for o in self.objectives]

    def resolve(self, path: str) -> Path:
        """A file named in the config: absolute, else next to the config, else the working dir, else a shipped file."""
        p = Path(path)
        if p.is_absolute():
            return p
        for base in (Path(self.base_dir), Path.cwd(), *shipped_roots()):
            if (base / p).exists():
                return base / p
        return Path(self.base_dir) / p

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (``None`` entries dropped)."""
        return _drop_none(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<stored config>") -> "RunConfig":
        """The inverse of ``to_dict``."""
        body = {k: v for k, v in d.items() if k not in ("source", "base_dir")}
        return parse_config(body, str(d.get("source", source)), str(d.get("base_dir", ".")))


def _drop_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def _type_name(t: Any) -> str:
    if t is float:
        return "a number"
    if t is int:
        return "an integer"
    if t is str:
        return "a string"
    if t is bool:
        return "true or false"
    origin = typing.get_origin(t)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(t)[0])}s".replace("a list of an ", "a list of ").replace(
            "a list of a ", "a list of ")
    if origin is dict:
        return "a table"
    return getattr(t, "__name__", str(t))


def _check(value: Any, t: Any, key: str, source: str) -> Any:
    """``value`` checked against the type ``t`` (dataclasses recurse); raises ``ConfigError``."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        for a in args[1:]:
            if a is bool and isinstance(value, bool) or a is str and isinstance(value, str):
                return value
        if len(args) > 1 and not isinstance(value, Mapping):
            try:
                return _check(value, args[0], key, source)
            except ConfigError:
                raise ConfigError(f"{source}: {key} must be {' or '.join(_type_name(a) for a in args)}, "
                                  f"got {value!r}") from None
        return _check(value, args[0], key, source)
    if dataclasses.is_dataclass(t):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
        return _fill(t, value, key, source)
    ok = False
    if t is bool:
        ok = isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif t is str:
        ok = isinstance(value, str)
    elif origin is list:
        if isinstance(value, list):
            return [_check(v, typing.get_args(t)[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif origin is dict:
        ok = isinstance(value, Mapping)
        if ok:
            value = dict(value)
    if not ok:
        raise ConfigError(f"{source}: {key} must be {_type_name(t)}, got {value!r}")
    return value


def _fill(cls: type, table: Mapping[str, Any], where: str, source: str) -> Any:
    """An instance of dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("source", "base_dir")}
    kwargs = {}
    for k, v in table.items():
        key = f"{where}.{k}" if where else k
        if k not in fields:
            raise ConfigError(f"{source}: unknown key '{key}' (known in [{where or 'top level'}]: "
                              f"{', '.join(fields)})")
        kwargs[k] = _check(v, hints[k], key, source)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing {', '.join(f'{where}.{m}' if where else m for m in missing)}")
    return cls(**kwargs)


def parse_config(table: Mapping[str, Any], source: str = "<config>", base_dir: str = ".") -> RunConfig:
    """A validated ``RunConfig`` from a parsed TOML document."""
    table = dict(table)
    objectives = table.get("objectives")
    if objectives is not None and not (isinstance(objectives, list) and all(isinstance(o, Mapping) for o in objectives)):
        raise ConfigError(f"{source}: objectives must be an array of tables ([[objectives]] with name and direction)")
    cfg = _fill(RunConfig, table, "", source)
    cfg.source, cfg.base_dir = source, base_dir
    _validate(cfg)
    return cfg


def _validate(cfg: RunConfig) -> None:
    src = cfg.source
    s = cfg.space
    if (s.grammar is None) == (s.cell is None):
        raise ConfigError(f"{src}: [space] needs exactly one of 'grammar' (a .lark file) or 'cell' (a cell-space .toml)")
    if s.stages is not None and s.stages < 1:
        raise ConfigError(f"{src}: space.stages must be >= 1, got {s.stages}")
    if s.head not in HEAD_POOLS:
        raise ConfigError(f"{src}: space.head must be one of {', '.join(HEAD_POOLS)}, got {s.head!r}")
    if not s.layout.strip():
        raise ConfigError(f"{src}: space.layout must be one of {', '.join(LAYOUT_MODES)} or a layout string")
    if "name" not in cfg.data and "kind" not in cfg.data:
        raise ConfigError(f"{src}: [data] needs 'name' (a built-in data set) or 'kind' (npz, csv, idx, folder, npy)")
    if not 1 <= len(cfg.objectives) <= 3:
        raise ConfigError(f"{src}: give 1 to 3 [[objectives]] (exact hypervolume), got {len(cfg.objectives)}")
    seen = set()
    for i, o in enumerate(cfg.objectives):
        where = f"objectives[{i}]"
        if o.direction not in ("maximize", "minimize"):
            raise ConfigError(f"{src}: {where}.direction must be 'maximize' or 'minimize', got {o.direction!r}")
        if o.name not in STATIC_OBJECTIVES and ("." not in o.name or o.name.startswith(".") or o.name.endswith(".")):
            raise ConfigError(f"{src}: {where}.name {o.name!r} is neither 'task.metric' nor one of "
                              f"{', '.join(STATIC_OBJECTIVES)}")
        if o.name in seen:
            raise ConfigError(f"{src}: objective {o.name!r} is given twice")
        seen.add(o.name)
        if o.direction == "minimize" and o.ref is None and o.bound is None:
            raise ConfigError(f"{src}: {where} ({o.name}, minimised) needs 'ref' or 'bound' "
                              "(the hypervolume reference point)")
    t, se = cfg.train, cfg.search
    es = se.early_stopping
    if t.epochs is None and t.steps is None and t.seconds is None:
        raise ConfigError(f"{src}: [train] needs epochs, steps or seconds")
    for key, v in (("train.epochs", t.epochs), ("train.steps", t.steps), ("train.seconds", t.seconds),
                   ("train.batch_size", t.batch_size), ("train.lr", t.lr), ("search.trials", se.trials),
                   ("search.seconds", se.seconds), ("search.trial_timeout", se.trial_timeout),
                   ("search.population", se.population), ("search.latency_runs", se.latency_runs),
                   ("search.max_failures", se.max_failures)):
        if v is not None and not v > 0:
            raise ConfigError(f"{src}: {key} must be > 0, got {v}")
    f = cfg.final
    for key, v in (("final.epochs", f.epochs), ("final.steps", f.steps), ("final.batch_size", f.batch_size),
                   ("final.lr", f.lr)):
        if v is not None and not v > 0:
            raise ConfigError(f"{src}: {key} must be > 0, got {v}")
    if f.members < 0:
        raise ConfigError(f"{src}: final.members must be >= 0, got {f.members}")
    if f.epochs is None and f.steps is None and t.epochs is None and t.steps is None:
        raise ConfigError(f"{src}: [final] needs epochs or steps when [train] gives only seconds "
                          "(final training is budgeted in steps or epochs, so results do not depend on machine load)")
    for key, v in (("train.lr_schedule", t.lr_schedule), ("final.lr_schedule", f.lr_schedule)):
        if v is not None and v not in LR_SCHEDULES:
            raise ConfigError(f"{src}: {key} must be one of {', '.join(LR_SCHEDULES)}, got {v!r}")
    if t.lr_schedule == "cosine" and t.epochs is None and t.steps is None:
        raise ConfigError(f"{src}: train.lr_schedule \"cosine\" decays over steps or epochs; [train] gives only seconds")
    if not _device_name_ok(t.device):
        raise ConfigError(f"{src}: train.device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {t.device!r}")
    fid = se.fidelity
    if fid.rungs < 1:
        raise ConfigError(f"{src}: search.fidelity.rungs must be >= 1, got {fid.rungs}")
    if not fid.eta > 1:
        raise ConfigError(f"{src}: search.fidelity.eta must be > 1, got {fid.eta}")
    if fid.enabled and es.enabled:
        raise ConfigError(f"{src}: search.fidelity and search.early_stopping are two ways to cut trainings short; "
                          "enable one of them")
    if se.multi_fidelity and t.epochs is None and t.steps is None:
        raise ConfigError(f"{src}: search.fidelity needs [train] steps or epochs (its rungs are fractions of that "
                          "budget); give them, or set search.fidelity.enabled = false")
    if se.trials is None and se.seconds is None:
        raise ConfigError(f"{src}: [search] needs a budget: trials and/or seconds")
    if se.sampler not in SAMPLERS:
        raise ConfigError(f"{src}: search.sampler {se.sampler!r} is unknown (samplers: {', '.join(SAMPLERS)})")
    if isinstance(se.priors, str) and not se.priors.strip():
        raise ConfigError(f"{src}: search.priors must be \"auto\", a bank file (.jsonl) or false, got an empty string")
    if se.predictor_skip and se.sampler != "predictor":
        raise ConfigError(f"{src}: search.predictor_skip needs sampler = \"predictor\", got {se.sampler!r}")
    if not 0 < es.fraction <= 1:
        raise ConfigError(f"{src}: search.early_stopping.fraction must be in (0, 1], got {es.fraction}")
    if es.min_trials < 1 or es.min_epoch < 0:
        raise ConfigError(f"{src}: search.early_stopping.min_trials must be >= 1 and min_epoch >= 0")
    if cfg.tasks is not None and not cfg.tasks:
        raise ConfigError(f"{src}: tasks, when given, must name at least one task")


def _device_name_ok(name: str) -> bool:
    """Whether ``name`` is a device name (whether this machine has it is checked where training starts)."""
    import re

    return re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name).strip().lower()) is not None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        table = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    return parse_config(table, str(p), str(p.resolve().parent))


def default_config() -> RunConfig:
    """The embedded default run config."""
    return parse_config(tomllib.loads(DEFAULT_TOML), "<default config>", ".")
