"""Evaluators turn a design into objective values; ``ArchEvaluator`` trains and measures ``ArchitectureSpace`` designs.

An evaluator writes the trained model as ONNX to the path it is given and returns the objective
values by name. Per-epoch partial results go to ``on_epoch`` (returning False stops training).
"""

from __future__ import annotations

import hashlib
import math
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Protocol, Sequence, Union

from nasmtl.errors import NasmtlError, first_line
from nasmtl.files import write_json

if TYPE_CHECKING:                  # annotations only: importing these here would load torch and the spaces at start-up
    from nasmtl.arch.ir import Arch
    from nasmtl.config import RunConfig
    from nasmtl.data.augment import Augment
    from nasmtl.data.dataset import MultiTaskDataset, Split
    from nasmtl.data.tasks import Task
    from nasmtl.search.fidelity import Schedule
    from nasmtl.spaces.base import ArchitectureSpace
    from nasmtl.spaces.cell import CellSpace
    from nasmtl.spaces.grammar import GrammarSpace
    from nasmtl.spaces.joint import JointSpace
    from nasmtl.spaces.quant import QuantPolicy, QuantSpace
    from nasmtl.train import Budget, TrainConfig, TrainResult

    Space = Union[ArchitectureSpace[object], JointSpace]
    """What ``ArchEvaluator`` searches: an architecture space (all stages shared) or a joint space."""

EpochCallback = Callable[[int, dict[str, float]], bool]
"""``on_epoch(epoch_index, partial_objectives) -> keep_going``."""


class TrialFailed(NasmtlError, RuntimeError):
    """A candidate that cannot be evaluated; ``reason`` is a short word for the kind of failure."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TrialStopped(Exception):
    """Training was stopped early by ``on_epoch``; ``partial`` holds the last partial objectives."""

    def __init__(self, epoch: int, partial: dict[str, float]) -> None:
        super().__init__(f"stopped early after epoch {epoch + 1}")
        self.epoch = epoch
        self.partial = partial


class Evaluator(Protocol):
    """Trains and measures one design."""

    def evaluate(self, design: object, onnx_path: Path, on_epoch: EpochCallback | None = None) -> dict[str, float]:
        """Objective values by name; raises ``TrialFailed`` or ``TrialStopped``."""
        ...


@dataclass
class ArchEvaluator:
    """Builds a design with one head per task, trains, exports (parity-checked) and measures it.

    Designs of an ``ArchitectureSpace`` are built with all stages shared; ``Design`` values of a
    ``JointSpace`` with their own layout, and, when they carry a quantization policy, the
    exported fp32 model is quantized and every measure is taken on the quantized file.

    Values: ``task.metric`` from validation (torch, or onnxruntime for a quantized model),
    ``params``, ``macs``, ``bytes`` of the ONNX graph, ``latency_ms`` (onnxruntime, batch 1, one
    thread, median), per task ``task.params``/``task.macs``/``task.bytes`` (the path from input to
    that task's head; ``task.latency_ms`` when an objective asks), ``delta_m`` when an objective
    asks (against the all-shared layout of the same architecture and policy, trained once per
    architecture). With a policy, the same trained model in fp32 and all int8-static is measured
    too, as ``fp32.*`` and ``int8.*`` (kept with the trial, not objectives). ``seconds`` limits the
    whole evaluation (training stops at it; a run over it fails with reason ``timeout``).
    """

    space: Space
    data: MultiTaskDataset
    objectives: Sequence[str]
    train_config: TrainConfig
    seconds: float | None = None
    latency_runs: int = 20
    seed: int = 0
    calibration_samples: int = 64
    head_pool: str = "global"
    device: str = "cpu"
    """The torch device trainings run on (a name ``nasmtl.train.resolve_device`` accepted)."""
    rung_steps: tuple[int, ...] | None = None
    """Multi-fidelity rungs (``nasmtl.search.fidelity.Schedule.steps``): ``on_epoch`` is asked at each, and a
    False answer ends training there; the trial is then measured and completed at that fidelity."""
    _tasks: list[str] = field(init=False)
    _references: dict[str, dict[str, float]] = field(init=False, default_factory=dict)
    _untrained: dict[str, tuple[dict[str, float], dict[str, str]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._tasks = [t.name for t in self.data.tasks]

    def build(self, design: object) -> Arch:
        """The lowered network of a design (what is trained and exported)."""
        return self._arch(design)

    def static_costs(self, design: object) -> dict[str, float]:
        """Params and MACs from the IR, known before training (used for partial results)."""
        from nasmtl.arch import arch_cost

        cost = arch_cost(self._arch(design))
        return {"params": float(cost.params), "macs": float(cost.macs)}

    def _arch(self, design: object) -> Arch:
        """The network of a design, with im2col-linear-col2im chains lowered to convolutions."""
        from nasmtl.spaces.joint import build_network

        heads = {t.name: t.n_outputs for t in self.data.tasks}
        return build_network(self.space, design, tuple(self.data.input_shape), heads, self.head_pool)

    def evaluate(self, design: object, onnx_path: Path, on_epoch: EpochCallback | None = None) -> dict[str, float]:
        """Train, export with parity check, and measure one design."""
        start = time.perf_counter()
        values = self._measure(design, Path(onnx_path), on_epoch, start)
        if "delta_m" in self.objectives:
            values.update(self._delta_m(design, values, Path(onnx_path), start))
        if self.seconds is not None and time.perf_counter() - start > self.seconds:
            raise TrialFailed("timeout", f"evaluation took longer than the trial timeout of {self.seconds:g} s")
        missing = [o for o in self.objectives if o not in values]
        if missing:
            raise TrialFailed("objective", f"objective(s) {', '.join(missing)} not measured "
                                           f"(available: {', '.join(sorted(values))})")
        return values

    def _measure(self, design: object, onnx_path: Path, on_epoch: EpochCallback | None, start: float) -> dict[str, float]:
        """Train, export, check parity, quantize (when the design has a policy) and measure."""
        from dataclasses import replace

        from nasmtl.arch import to_torch
        from nasmtl.onnx import check_parity, export_onnx, graph_stats, measure_latency
        from nasmtl.train import Budget, TrainingDiverged, train

        try:
            arch = self._arch(design)
        except Exception as e:
            raise TrialFailed("build", f"design does not build: {e}") from None
        static = self.static_costs(design)
        policy = getattr(design, "quant", None)
        if self.rung_steps is not None:
            static.update(self._file_costs(design, arch, policy, onnx_path))
        cfg = self.train_config
        if self.seconds is not None:
            b = cfg.budget
            left = max(self.seconds - (time.perf_counter() - start), 1.0)
            secs = left if b.seconds is None else min(b.seconds, left)
            cfg = replace(cfg, budget=Budget(epochs=b.epochs, steps=b.steps, seconds=secs))
        cfg = replace(cfg, eval_batch_size=eval_batch_size(arch, cfg.eval_batch_size), eval_steps=self.rung_steps)
        stopped: list[tuple[int, dict[str, float]]] = []
        reached: list[int] = []

        def epoch_cb(epoch: int, metrics: Mapping[str, Mapping[str, float]]) -> bool:
            partial = dict(static)
            partial.update(_flatten(metrics))
            reached.append(epoch)
            if on_epoch is not None and on_epoch(epoch, partial) is False:
                stopped.append((epoch, partial))
                return False
            return True

        try:
            model = to_torch(arch, seed=self.seed).to(self.device)
            result = train(model, self.data, cfg, on_epoch=epoch_cb)
        except TrainingDiverged as e:
            raise TrialFailed("nan", str(e)) from None
        except MemoryError:
            raise TrialFailed("out of memory", "out of memory while training") from None
        except RuntimeError as e:
            if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
                raise TrialFailed("out of memory", f"out of memory while training: {first_line(e)}") from None
            raise
        if stopped and self.rung_steps is None:
            raise TrialStopped(*stopped[-1])
        if not stopped and self.seconds is not None and _short_of_budget(result, self.train_config.budget,
                                                                         cfg.budget.seconds or 0):
            raise TrialFailed("timeout", f"training reached the trial timeout of {self.seconds:g} s "
                                         f"after {result.epochs:.2f} epochs")
        values = _flatten(result.metrics)
        top = not stopped
        if self.rung_steps is not None:
            values.update(rung=float(reached[-1] if reached else 0), steps=float(result.steps))
        model = model.cpu()
        fp32_path = onnx_path.with_name(onnx_path.stem + ".fp32.onnx") if policy is not None else onnx_path
        export_onnx(model, tuple(self.data.input_shape), fp32_path, self._tasks)
        check_parity(model, fp32_path, self.data.val.x[:64], atol=1e-3, rtol=1e-5)
        stats = graph_stats(fp32_path)
        values.update(params=float(stats.params), macs=float(stats.macs), bytes=float(stats.bytes))
        if policy is not None:
            values.update(self._quantized(fp32_path, onnx_path, policy, companions=top))
        elif "latency_ms" in self.objectives:
            values["latency_ms"] = measure_latency(onnx_path, runs=self.latency_runs, warmup=3).median_ms
        values.update(self._task_costs(onnx_path))
        return values

    def effective_key(self, design: object) -> str | None:
        """A digest equal for designs that build the same file, or None for a design without a policy.

        Policies can be synonyms: ``int4_int8`` on a group of convolutions is ``int8_static``, and
        ``int4_weight`` (MatMul only) leaves one at fp32. The key holds the architecture, the layout
        and the precision each node actually got when the untrained network was quantized (the
        same file ``_file_costs`` measures, so the work is done once per design)."""
        policy = getattr(design, "quant", None)
        if policy is None:
            return None
        _, applied = self._untrained_file(design, self._arch(design), policy, None)
        parts = [str(getattr(design, p)) for p in ("arch", "layout")]
        text = "\n".join([*parts, *(f"{n}={applied[n]}" for n in sorted(applied))])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _file_costs(self, design: object, arch: Arch, policy: QuantPolicy | None, onnx_path: Path) -> dict[str, float]:
        """``bytes`` (and ``latency_ms`` when an objective) of the design's file, known before training.

        Weights do not change a file's size or its run time, so the untrained network, exported and
        quantized with the design's policy, gives the costs that multi-fidelity promotion ranks by.
        """
        want = [o for o in ("bytes", "latency_ms") if o in self.objectives]
        if not want:
            return {}
        costs, _ = self._untrained_file(design, arch, policy, onnx_path.parent)
        return {k: costs[k] for k in want}

    def _untrained_file(self, design: object, arch: Arch, policy: QuantPolicy | None,
                        folder: Path | None) -> tuple[dict[str, float], dict[str, str]]:
        """Costs and per-node precisions of the design's untrained file (kept for the last design asked)."""
        import tempfile

        from nasmtl.arch import to_torch
        from nasmtl.onnx import export_onnx, graph_stats, measure_latency

        key = self.space.encode(design) if hasattr(self.space, "encode") else repr(design)
        if key in self._untrained:
            return self._untrained[key]
        with tempfile.TemporaryDirectory(prefix="nasmtl-cost-", dir=folder) as tmp:
            path = Path(tmp) / "m.onnx"
            export_onnx(to_torch(arch, seed=self.seed), tuple(self.data.input_shape), path, self._tasks)
            applied: dict[str, str] = {}
            if policy is not None:
                from nasmtl.onnx.policy import apply_policy

                q = Path(tmp) / "m.q.onnx"
                applied = apply_policy(path, q, policy, self.data.train.x[: self.calibration_samples],
                                       calibration_samples=self.calibration_samples).applied
                path = q
            costs = {"bytes": float(graph_stats(path).bytes)}
            if "latency_ms" in self.objectives:
                costs["latency_ms"] = measure_latency(path, runs=self.latency_runs, warmup=3).median_ms
        self._untrained.clear()
        self._untrained[key] = (costs, dict(applied))
        return self._untrained[key]

    def _quantized(self, fp32_path: Path, onnx_path: Path, policy: QuantPolicy, companions: bool = True) -> dict[str, float]:
        """Apply ``policy``, measure the quantized file in onnxruntime; fp32 and all-int8 as ``fp32.*``, ``int8.*``
        (``companions``; skipped for trials stopped below the top rung, which never reach the report)."""
        from nasmtl.onnx.policy import baselines, measure_policy

        calib = self.data.train.x[: self.calibration_samples]
        try:
            m = measure_policy(fp32_path, onnx_path, policy, calib, self.data, "val", self.latency_runs,
                               calibration_samples=self.calibration_samples)
            base = baselines(fp32_path, calib, self.data, fp32_path.parent, "val", self.latency_runs) \
                if companions else {}
        except Exception as e:
            raise TrialFailed("quantization", f"policy {policy} could not be applied or measured: "
                                              f"{first_line(e)}") from None
        values = dict(m.values)
        for name, vals in base.items():
            values.update({f"{name}.{k}": float(v) for k, v in vals.items()})
        values["quant.skipped"] = float(len(m.quant.skipped))
        note = {"policy": str(policy), "applied": m.quant.applied, "skipped": m.quant.skipped,
                "groups": m.quant.groups}
        write_json(onnx_path.with_name(onnx_path.stem + ".quant.json"), note)
        int8 = fp32_path.parent / f"{fp32_path.stem}.int8.onnx"
        int8.unlink(missing_ok=True)
        return values

    def _task_costs(self, onnx_path: Path) -> dict[str, float]:
        """``task.params``/``task.macs``/``task.bytes`` (and ``task.latency_ms`` when asked) of each task's path."""
        from nasmtl.onnx.task_costs import onnx_task_costs

        want_latency = any(o == f"{t}.latency_ms" for o in self.objectives for t in self._tasks)
        costs = onnx_task_costs(onnx_path, self._tasks, self.latency_runs if want_latency else 0)
        return {f"{t}.{k}": v for t, vals in costs.items() for k, v in vals.items()}

    def _delta_m(self, design: object, values: Mapping[str, float], onnx_path: Path, start: float) -> dict[str, float]:
        """Δm of the design's primary metrics against the all-shared layout of the same architecture."""
        import tempfile

        from nasmtl.data.delta_m import delta_m
        from nasmtl.spaces.joint import Design

        names = [f"{t.name}.{t.primary_metric}" for t in self.data.tasks]
        if not isinstance(design, Design):
            return {"delta_m": 0.0, **{f"ref.{n}": float(values[n]) for n in names}}
        ref_design = Design(design.arch, self.space.layout_space.shared(), design.quant)
        key = self.space.encode(ref_design)
        if key not in self._references:
            if ref_design == design:
                self._references[key] = {n: float(values[n]) for n in names}
            else:
                with tempfile.TemporaryDirectory(prefix="nasmtl-ref-") as tmp:
                    ref = self._measure(ref_design, Path(tmp) / "ref.onnx", None, time.perf_counter())
                self._references[key] = {n: float(ref[n]) for n in names}
        ref = self._references[key]
        return {"delta_m": delta_m(values, ref), **{f"ref.{n}": v for n, v in ref.items()}}


def _short_of_budget(result: TrainResult, budget: Budget, seconds: float) -> bool:
    """Whether training stopped at the timeout before its own budget was spent."""
    if result.seconds < seconds:
        return False
    if budget.seconds is not None and budget.seconds <= seconds:
        return False
    if budget.epochs is not None and result.epochs + 1e-9 < budget.epochs:
        return True
    return budget.steps is not None and result.steps < budget.steps


def _flatten(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{task: {metric: v}}`` -> ``{"task.metric": v}``."""
    return {f"{t}.{m}": float(v) for t, ms in metrics.items() for m, v in ms.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))}


def build_evaluator(cfg: RunConfig, space: Space, data: MultiTaskDataset | None = None) -> ArchEvaluator:
    """The evaluator of a run config (tasks and objectives checked); ``data``: the run's data set when
    already loaded (``load_data``), so a search set-up reads it once."""
    from nasmtl.config import ConfigError
    from nasmtl.train import Budget, TrainConfig
    from nasmtl.onnx.task_costs import TASK_COSTS

    if data is None:
        data = load_data(cfg)
    if cfg.tasks is not None:
        unknown = [t for t in cfg.tasks if t not in data.task_names]
        if unknown:
            raise ConfigError(f"{cfg.source}: tasks: unknown task(s) {', '.join(unknown)} "
                              f"(data set {data.name!r} has {', '.join(data.task_names)})")
        data = _select_tasks(data, cfg.tasks)
    for i, o in enumerate(cfg.objectives):
        if o.task is not None:
            task, metric = o.name.split(".", 1)
            if task not in data.task_names:
                raise ConfigError(f"{cfg.source}: objectives[{i}].name {o.name!r}: no task {task!r} "
                                  f"(tasks: {', '.join(data.task_names)})")
            known = _metric_names(data.task(task), data)
            if metric in TASK_COSTS:
                continue
            if known is not None and metric not in known:
                raise ConfigError(f"{cfg.source}: objectives[{i}].name {o.name!r}: task {task!r} has no metric "
                                  f"{metric!r} (metrics: {', '.join(sorted(known))})")
    t = cfg.train
    tc = TrainConfig(budget=Budget(epochs=t.epochs, steps=t.steps, seconds=t.seconds), batch_size=t.batch_size,
                     lr=t.lr, lr_schedule=t.lr_schedule,  # type: ignore[arg-type]
                     weight_decay=t.weight_decay, optimizer=t.optimizer,  # type: ignore[arg-type]
                     seed=cfg.search.seed, loss_weighting=t.loss_weighting,  # type: ignore[arg-type]
                     augment=train_augment(cfg))
    if "delta_m" in cfg.objective_names and not hasattr(space, "layout_space"):
        raise ConfigError(f"{cfg.source}: objective 'delta_m' needs a layout part ([space] layout = \"search\" "
                          "or a fixed layout); with all stages shared there is nothing to compare")
    calib = getattr(getattr(space, "quant_space", None), "calibration_samples", 64)
    return ArchEvaluator(space, data, cfg.objective_names, tc, cfg.search.trial_timeout,
                         cfg.search.latency_runs, cfg.search.seed, calib, cfg.space.head, config_device(cfg),
                         schedule(cfg, data).steps if cfg.search.multi_fidelity else None)


def config_device(cfg: RunConfig) -> str:
    """The device of ``[train] device`` on this machine; a ``ConfigError`` naming the key when it has none."""
    from nasmtl.config import ConfigError
    from nasmtl.train import DeviceError, resolve_device

    try:
        return str(resolve_device(cfg.train.device))
    except DeviceError as e:
        raise ConfigError(f"{cfg.source}: train.device: {e}") from None


def schedule(cfg: RunConfig, data: MultiTaskDataset) -> Schedule:
    """The run's successive-halving schedule: rungs below the ``[train]`` budget in steps."""
    from nasmtl.search.fidelity import Schedule
    from nasmtl.train import Budget, budget_steps

    t, f = cfg.train, cfg.search.fidelity
    top = budget_steps(Budget(epochs=t.epochs, steps=t.steps), len(data.train), t.batch_size)
    return Schedule.geometric(int(top), f.rungs, f.eta)


EVAL_BYTES = 1 << 30
"""Float32 activations one evaluation batch may hold (``eval_batch_size``)."""


def eval_batch_size(arch: Arch, cap: int) -> int:
    """The evaluation batch (at most ``cap``) whose activations stay under ``EVAL_BYTES``.

    A design's MACs say little about its activations: im2col routes make token maps of
    1,296 x 144 values per image, and one such design of 275k MACs held 5.7 GB at batch 256.
    """
    from nasmtl.arch import activation_elements

    return max(1, min(cap, EVAL_BYTES // (4 * max(activation_elements(arch), 1))))


def _metric_names(task: Task, data: MultiTaskDataset) -> set[str] | None:
    """The metrics a task reports, read off a tiny evaluation (``None`` if that cannot be done)."""
    import numpy as np

    try:
        y = data.val.y[task.name][:4]
        pred = np.zeros((len(y), task.n_outputs), dtype=np.float32)
        return set(task.metrics(pred.reshape(len(y), -1) if task.kind != "regression" or task.n_outputs > 1
                                else pred[:, 0], y))
    except Exception:
        return None


def _select_tasks(data: MultiTaskDataset, names: Sequence[str]) -> MultiTaskDataset:
    """The data set restricted to ``names`` (in that order)."""
    from dataclasses import replace

    def split(s: Split) -> Split:
        return replace(s, y={n: s.y[n] for n in names})

    return replace(data, tasks=tuple(data.task(n) for n in names), train=split(data.train),
                   val=split(data.val), test=split(data.test))


def load_space(cfg: RunConfig, data: MultiTaskDataset | None = None) -> Space:
    """The search space of a run config: the architecture space, or a ``JointSpace`` when the
    config searches or fixes a layout other than all-shared, fixes the architecture, or quantizes.
    ``data``: the run's data set when already loaded (else it is read here where the space needs it)."""
    from nasmtl.config import ConfigError

    s = cfg.space
    if data is None and s.grammar is not None:
        data = load_data(cfg)
    arch_space = _arch_space(cfg, data)
    quant = s.quant if s.quant not in (None, False) else None
    if s.layout == "shared" and quant is None and s.arch is None and s.stages is None:
        return arch_space
    import numpy as np

    from nasmtl.config import LAYOUT_MODES
    from nasmtl.spaces.base import SpaceError
    from nasmtl.spaces.joint import JointSpace, stage_count
    from nasmtl.spaces.layout import LayoutSpace

    if data is None:
        data = load_data(cfg)
    tasks = list(cfg.tasks) if cfg.tasks is not None else list(data.task_names)
    fixed: dict[str, object] = {}
    try:
        if s.arch is not None:
            fixed["arch"] = arch_space.decode(s.arch)
    except SpaceError as e:
        raise ConfigError(f"{cfg.source}: space.arch: {e}") from None
    if s.stages is not None:
        n_stages = s.stages
    elif "arch" in fixed:
        n_stages = len(arch_space.stages(fixed["arch"], tuple(data.input_shape)))
    else:
        n_stages = stage_count(arch_space, tuple(data.input_shape), np.random.default_rng(cfg.search.seed))
    try:
        layouts = LayoutSpace(tasks, n_stages)
    except SpaceError as e:
        raise ConfigError(f"{cfg.source}: [space] layout: {e}") from None
    if s.layout == "shared":
        fixed["layout"] = layouts.shared()
    elif s.layout == "separate":
        fixed["layout"] = layouts.separate()
    elif s.layout != "search":
        try:
            fixed["layout"] = layouts.decode(s.layout)
        except SpaceError as e:
            raise ConfigError(f"{cfg.source}: space.layout: {s.layout!r} is none of {', '.join(LAYOUT_MODES)} "
                              f"and not a layout string ({e})") from None
    quant_space = None
    if quant is not None:
        quant_space, policy = _quant_space(cfg, quant, n_stages)
        if policy is not None:
            fixed["quant"] = policy
    return JointSpace(arch_space, layouts, quant_space, fixed)


def _quant_space(cfg: RunConfig, quant: str | bool, n_groups: int) -> tuple[QuantSpace, QuantPolicy | None]:
    """The quantization part of ``[space] quant``: (space, fixed policy or None)."""
    from nasmtl.config import ConfigError
    from nasmtl.spaces.base import SpaceError
    from nasmtl.spaces.quant import PRECISIONS, QuantPolicy, QuantSpace

    if quant is True:
        quant = "search_spaces/quant.toml"
    if quant in PRECISIONS:
        return QuantSpace(n_groups, tuple(PRECISIONS)), QuantPolicy.uniform(quant, n_groups)
    path = cfg.resolve(quant)
    if not path.is_file():
        raise ConfigError(f"{cfg.source}: space.quant: {quant!r} is neither a precision ({', '.join(PRECISIONS)}) "
                          f"nor a quantization-space file (looked in {path.parent})")
    try:
        return QuantSpace.from_file(path, n_groups), None
    except SpaceError as e:
        raise ConfigError(f"{cfg.source}: space.quant: {e}") from None


_EXTRA_AUGMENT: ContextVar[Augment | None] = ContextVar("nasmtl_extra_augment", default=None)
"""The batch function of ``run_search(augment=...)`` while that search runs (code is not stored in a run)."""


@contextmanager
def extra_augment(fn: Augment | None) -> Iterator[None]:
    """Within the block, every training made from a run config (trials, final phase) also applies ``fn``."""
    token = _EXTRA_AUGMENT.set(fn)
    try:
        yield
    finally:
        _EXTRA_AUGMENT.reset(token)


def train_augment(cfg: RunConfig) -> Augment | None:
    """The run's ``[train] augment`` as a batch function, followed by the one of ``extra_augment`` if any
    (a ``ConfigError`` naming the key when the table is wrong)."""
    from nasmtl.config import ConfigError
    from nasmtl.data import DataError
    from nasmtl.data.augment import chain, from_spec

    try:
        built_in = from_spec(cfg.train.augment)
    except DataError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None
    return chain(built_in, _EXTRA_AUGMENT.get())


def load_data(cfg: RunConfig) -> MultiTaskDataset:
    """The run's data set (``[data]``); a data error is a ``ConfigError`` naming the config."""
    from nasmtl.config import ConfigError
    from nasmtl.data import DataError, load_dataset

    try:
        return load_dataset(dict(cfg.data), cfg.base_dir)
    except DataError as e:
        raise ConfigError(f"{cfg.source}: [data]: {e}") from None


def _arch_space(cfg: RunConfig, data: MultiTaskDataset | None) -> GrammarSpace | CellSpace:
    """The grammar or cell space named in ``[space]`` (a grammar takes the input shape of ``data``)."""
    from nasmtl.config import ConfigError

    s = cfg.space
    if s.grammar is not None:
        path = cfg.resolve(s.grammar)
        if not path.is_file():
            raise ConfigError(f"{cfg.source}: space.grammar: no grammar file {s.grammar!r} (looked in {path.parent})")
        from nasmtl.spaces.grammar import GrammarSpace

        input_shape = tuple((data if data is not None else load_data(cfg)).input_shape)
        return GrammarSpace.from_file(path, input_shape, max_depth=s.max_depth, max_nodes=s.max_nodes,
                                      max_params=s.max_params, max_macs=s.max_macs)
    path = cfg.resolve(s.cell)
    if not path.is_file():
        raise ConfigError(f"{cfg.source}: space.cell: no cell-space file {s.cell!r} (looked in {path.parent})")
    from nasmtl.spaces.cell import CellSpace

    return CellSpace.from_file(path)
