"""Evaluators turn a design into objective values; ``ArchEvaluator`` trains and measures ``ArchitectureSpace`` designs.

An evaluator writes the trained model as ONNX to the path it is given and returns the objective
values by name. Per-epoch partial results go to ``on_epoch`` (returning False stops training).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

EpochCallback = Callable[[int, dict[str, float]], bool]
"""``on_epoch(epoch_index, partial_objectives) -> keep_going``."""


class TrialFailed(RuntimeError):
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

    def evaluate(self, design: Any, onnx_path: Path, on_epoch: EpochCallback | None = None) -> dict[str, float]:
        """Objective values by name; raises ``TrialFailed`` or ``TrialStopped``."""
        ...


@dataclass
class ArchEvaluator:
    """Builds an ``ArchitectureSpace`` design with one head per task (all stages shared), trains, exports, measures.

    Objectives: ``task.metric`` from validation, and ``params``, ``macs``, ``bytes`` of the ONNX
    graph and ``latency_ms`` (onnxruntime, batch 1, one thread, median). ``seconds`` limits the
    whole evaluation (training stops at it; a run over it fails with reason ``timeout``).
    """

    space: Any
    data: Any
    objectives: Sequence[str]
    train_config: Any
    seconds: float | None = None
    latency_runs: int = 20
    seed: int = 0
    _tasks: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self._tasks = [t.name for t in self.data.tasks]

    def static_costs(self, design: Any) -> dict[str, float]:
        """Params and MACs from the IR, known before training (used for partial results)."""
        from nasmtl.arch import arch_cost

        cost = arch_cost(self._arch(design))
        return {"params": float(cost.params), "macs": float(cost.macs)}

    def _arch(self, design: Any) -> Any:
        from nasmtl.arch.compose import compose, shared_layout

        stages = self.space.stages(design, tuple(self.data.input_shape))
        heads = {t.name: t.n_outputs for t in self.data.tasks}
        return compose(stages, shared_layout(self._tasks, len(stages)), heads)

    def evaluate(self, design: Any, onnx_path: Path, on_epoch: EpochCallback | None = None) -> dict[str, float]:
        """Train, export with parity check, and measure one design."""
        from dataclasses import replace

        from nasmtl.arch import to_torch
        from nasmtl.onnx import check_parity, export_onnx, graph_stats, measure_latency
        from nasmtl.train import Budget, TrainingDiverged, train

        start = time.perf_counter()
        try:
            arch = self._arch(design)
        except Exception as e:
            raise TrialFailed("build", f"design does not build: {e}") from None
        static = self.static_costs(design)
        cfg = self.train_config
        if self.seconds is not None:
            b = cfg.budget
            secs = self.seconds if b.seconds is None else min(b.seconds, self.seconds)
            cfg = replace(cfg, budget=Budget(epochs=b.epochs, steps=b.steps, seconds=secs))
        stopped: list[tuple[int, dict[str, float]]] = []

        def epoch_cb(epoch: int, metrics: Mapping[str, Mapping[str, float]]) -> bool:
            partial = dict(static)
            partial.update(_flatten(metrics))
            if on_epoch is not None and on_epoch(epoch, partial) is False:
                stopped.append((epoch, partial))
                return False
            return True

        try:
            model = to_torch(arch, seed=self.seed)
            result = train(model, self.data, cfg, on_epoch=epoch_cb)
        except TrainingDiverged as e:
            raise TrialFailed("nan", str(e)) from None
        except MemoryError:
            raise TrialFailed("out of memory", "out of memory while training") from None
        except RuntimeError as e:
            if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
                raise TrialFailed("out of memory", f"out of memory while training: {_short(e)}") from None
            raise
        if stopped:
            raise TrialStopped(*stopped[-1])
        if self.seconds is not None and _short_of_budget(result, self.train_config.budget, self.seconds):
            raise TrialFailed("timeout", f"training reached the trial timeout of {self.seconds:g} s "
                                         f"after {result.epochs:.2f} epochs")
        values = _flatten(result.metrics)
        export_onnx(model, tuple(self.data.input_shape), onnx_path, self._tasks)
        check_parity(model, onnx_path, self.data.val.x[:64], atol=1e-3)
        stats = graph_stats(onnx_path)
        values.update(params=float(stats.params), macs=float(stats.macs), bytes=float(stats.bytes))
        if "latency_ms" in self.objectives:
            values["latency_ms"] = measure_latency(onnx_path, runs=self.latency_runs, warmup=3).median_ms
        if self.seconds is not None and time.perf_counter() - start > self.seconds:
            raise TrialFailed("timeout", f"evaluation took longer than the trial timeout of {self.seconds:g} s")
        missing = [o for o in self.objectives if o not in values]
        if missing:
            raise TrialFailed("objective", f"objective(s) {', '.join(missing)} not measured "
                                           f"(available: {', '.join(sorted(values))})")
        return values


def _short_of_budget(result: Any, budget: Any, seconds: float) -> bool:
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


def _short(e: BaseException, limit: int = 200) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s if len(s) <= limit else s[: limit - 3] + "..."


def build_evaluator(cfg: Any, space: Any) -> ArchEvaluator:
    """The evaluator of a run config (data set loaded, tasks and objectives checked)."""
    from nasmtl.config import ConfigError
    from nasmtl.data import DataError, load_dataset
    from nasmtl.train import Budget, TrainConfig

    spec = dict(cfg.data)
    try:
        data = load_dataset(spec, cfg.base_dir)
    except DataError as e:
        raise ConfigError(f"{cfg.source}: [data]: {e}") from None
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
            if known is not None and metric not in known:
                raise ConfigError(f"{cfg.source}: objectives[{i}].name {o.name!r}: task {task!r} has no metric "
                                  f"{metric!r} (metrics: {', '.join(sorted(known))})")
    t = cfg.train
    tc = TrainConfig(budget=Budget(epochs=t.epochs, steps=t.steps, seconds=t.seconds), batch_size=t.batch_size,
                     lr=t.lr, weight_decay=t.weight_decay, optimizer=t.optimizer,  # type: ignore[arg-type]
                     seed=cfg.search.seed, loss_weighting=t.loss_weighting)  # type: ignore[arg-type]
    return ArchEvaluator(space, data, cfg.objective_names, tc, cfg.search.trial_timeout,
                         cfg.search.latency_runs, cfg.search.seed)


def _metric_names(task: Any, data: Any) -> set[str] | None:
    """The metrics a task reports, read off a tiny evaluation (``None`` if that cannot be done)."""
    import numpy as np

    try:
        y = data.val.y[task.name][:4]
        pred = np.zeros((len(y), task.n_outputs), dtype=np.float32)
        return set(task.metrics(pred.reshape(len(y), -1) if task.kind != "regression" or task.n_outputs > 1
                                else pred[:, 0], y))
    except Exception:
        return None


def _select_tasks(data: Any, names: Sequence[str]) -> Any:
    """The data set restricted to ``names`` (in that order)."""
    from dataclasses import replace

    def split(s: Any) -> Any:
        return replace(s, y={n: s.y[n] for n in names})

    return replace(data, tasks=tuple(data.task(n) for n in names), train=split(data.train),
                   val=split(data.val), test=split(data.test))


def load_space(cfg: Any) -> Any:
    """The search space of a run config."""
    from nasmtl.config import ConfigError
    from nasmtl.data import load_dataset

    s = cfg.space
    if s.grammar is not None:
        path = cfg.resolve(s.grammar)
        if not path.is_file():
            raise ConfigError(f"{cfg.source}: space.grammar: no grammar file {s.grammar!r} (looked in {path.parent})")
        from nasmtl.spaces.grammar import GrammarSpace

        input_shape = tuple(load_dataset(dict(cfg.data), cfg.base_dir).input_shape)
        return GrammarSpace.from_file(path, input_shape, max_depth=s.max_depth, max_nodes=s.max_nodes,
                                      max_params=s.max_params, max_macs=s.max_macs)
    path = cfg.resolve(s.cell)
    if not path.is_file():
        raise ConfigError(f"{cfg.source}: space.cell: no cell-space file {s.cell!r} (looked in {path.parent})")
    from nasmtl.spaces.cell import CellSpace

    return CellSpace.from_file(path)
