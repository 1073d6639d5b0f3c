"""The multi-task training loop: budgeted (epochs, steps, seconds), deterministic under a seed, NaN-safe.

Model contract: ``model(x)`` maps a batch ``(batch, *input_shape)`` to ``{task name: output}``
(logits for classification and multilabel tasks, values for regression).
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from nasmtl.config import LR_SCHEDULES
from nasmtl.data import MultiTaskDataset, Split, Task
from nasmtl.data.rows import Rows
from nasmtl.errors import NasmtlError

Metrics = dict[str, dict[str, float]]


class TrainingDiverged(NasmtlError, RuntimeError):
    """A task's loss became NaN/inf or exceeded ``max_loss``; ``task``, ``step`` and ``value`` say where."""

    def __init__(self, message: str, task: str, step: int, value: float) -> None:
        super().__init__(message)
        self.task = task
        self.step = step
        self.value = value


@dataclass
class Budget:
    """When training stops: the first of ``epochs`` (may be fractional), ``steps`` or wall ``seconds`` reached."""

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        """Reject an empty or non-positive budget where it is made."""
        if self.epochs is None and self.steps is None and self.seconds is None:
            raise ValueError("Budget needs at least one of epochs, steps, seconds")
        for label in ("epochs", "steps", "seconds"):
            v = getattr(self, label)
            if v is not None and not v > 0:
                raise ValueError(f"Budget.{label} must be > 0, got {v}")


@dataclass
class TrainConfig:
    """Optimisation settings of one training run."""

    budget: Budget = field(default_factory=lambda: Budget(epochs=1))
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    seed: int = 0
    loss_weighting: Literal["equal", "uncertainty"] = "equal"
    task_weights: dict[str, float] | None = None
    max_loss: float = 1e4
    eval_batch_size: int = 512
    eval_steps: tuple[int, ...] | None = None
    """Validate after exactly these steps (e.g. the rungs of a multi-fidelity schedule) instead of after
    every epoch; ``on_epoch`` then gets the index of the point reached. Steps past the budget never occur."""
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    """Applied to each training batch before the step (``nasmtl.data.augment``); its generator is seeded
    from ``seed``, apart from the one that orders the batches."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """``cosine``: the learning rate falls from ``lr`` to 0 over the budget's steps (half a cosine), so the
    weights trained last settle instead of ending wherever the last constant-rate step left them."""


def scheduled_lr(lr: float, schedule: str, step: int, total: float) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``: ``lr`` throughout, or half a cosine from ``lr`` to 0."""
    if schedule == "constant" or not math.isfinite(total) or total <= 0:
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total) / total))


DEVICES = ("auto", "cpu", "cuda", "cuda:N")
"""Device names of ``[train] device`` (``resolve_device``)."""


class DeviceError(NasmtlError, ValueError):
    """A device that this machine does not have (CUDA asked for without a CUDA build or GPU)."""


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a name: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Asking for CUDA on a machine without it is a ``DeviceError`` rather than a failure deep inside the
    first training step, so a CPU-only machine says plainly what is missing.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or re.fullmatch(r"cuda:\d+", name):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: no CUDA device on this machine (torch {torch.__version__}, "
                              "torch.cuda.is_available() is False); use device = \"cpu\" or \"auto\"")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise DeviceError(f"unknown device {name!r} (devices: {', '.join(DEVICES)})")


@dataclass
class TrainResult:
    """Validation metrics per task after training, the per-epoch history and what the budget allowed."""

    metrics: Metrics
    history: list[dict]
    epochs: float
    steps: int
    seconds: float
    stopped_early: bool
    log_vars: dict[str, float] | None = None


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The model's outputs, checked to be a dict holding every task."""
    out = model(x)
    if not isinstance(out, dict):
        raise TypeError(f"the model must return a dict of task outputs, got {type(out).__name__}")
    missing = [n for n in names if n not in out]
    if missing:
        raise KeyError(f"the model's outputs lack task(s) {', '.join(missing)} (it returned {', '.join(out)})")
    return out


def predict(model: nn.Module, x: np.ndarray | Rows, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Model outputs per task for inputs ``x`` read batch by batch, in eval mode and without gradients
    (the mode is restored)."""
    device = _device(model)
    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                out = model(torch.as_tensor(np.asarray(x[i:i + batch_size], dtype=np.float32), device=device))
                if not isinstance(out, dict):
                    raise TypeError(f"the model must return a dict of task outputs, got {type(out).__name__}")
                for k, v in out.items():
                    chunks.setdefault(k, []).append(v.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def evaluate(model: nn.Module, split: Split, tasks: Sequence[Task], batch_size: int = 512) -> Metrics:
    """Metrics per task of the model on one split."""
    preds = predict(model, split.x, batch_size)
    missing = [t.name for t in tasks if t.name not in preds]
    if missing:
        raise KeyError(f"the model's outputs lack task(s) {', '.join(missing)}")
    return {t.name: t.metrics(preds[t.name], split.y[t.name]) for t in tasks}


def _optimizer(params: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser over parameter groups."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r} (adam, adamw, sgd)")


def _check_config(data: MultiTaskDataset, config: TrainConfig) -> dict[str, float]:
    """Validated settings; returns the weight of each task."""
    if config.batch_size < 1 or config.eval_batch_size < 1:
        raise ValueError("batch sizes must be >= 1")
    if config.loss_weighting not in ("equal", "uncertainty"):
        raise ValueError(f"unknown loss_weighting {config.loss_weighting!r} (equal, uncertainty)")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r} ({', '.join(LR_SCHEDULES)})")
    if config.lr_schedule == "cosine" and config.budget.steps is None and config.budget.epochs is None:
        raise ValueError("lr_schedule 'cosine' needs a budget of steps or epochs (it decays over them)")
    if len(data.train) == 0 or len(data.val) == 0:
        raise ValueError(f"data set {data.name!r} needs non-empty train and val splits")
    names = [t.name for t in data.tasks]
    weights = dict.fromkeys(names, 1.0)
    for k, w in (config.task_weights or {}).items():
        if k not in weights:
            raise ValueError(f"task_weights names unknown task {k!r} (tasks: {', '.join(names)})")
        weights[k] = float(w)
    return weights


def _progress_line(epoch: int, epochs: float, loss: float, metrics: Metrics, tasks: Sequence[Task],
                   seconds: float) -> str:
    """One compact line per epoch for stderr."""
    parts = [f"epoch {epoch + 1}" + (f"/{epochs:.3g}" if epochs != math.inf else ""), f"loss {loss:.4f}"]
    parts += [f"{t.name} {t.primary_metric} {metrics[t.name][t.primary_metric]:.4f}" for t in tasks]
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n`` examples (a trailing batch of one example is dropped)."""
    bs = min(batch_size, n)
    return math.ceil(n / bs) - (1 if n > bs and n % bs == 1 else 0)


def budget_steps(budget: Budget, n: int, batch_size: int) -> int | None:
    """The steps a budget allows on ``n`` examples (``None`` for a budget of seconds only)."""
    limits = [budget.steps] if budget.steps is not None else []
    if budget.epochs is not None:
        limits.append(math.ceil(budget.epochs * steps_per_epoch(n, batch_size)))
    return min(limits) if limits else None


def _batch_reader(x: np.ndarray | Rows) -> Callable[[torch.Tensor], torch.Tensor]:
    """Inputs of a batch from its indices: an array in memory is indexed as one tensor, ``Rows`` of a
    file larger than memory are read batch by batch (only the batch is ever in memory)."""
    if isinstance(x, Rows):
        return lambda idx: torch.from_numpy(x[idx.numpy()])
    x_all = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return lambda idx: x_all[idx]


def train(model: nn.Module, data: MultiTaskDataset, config: TrainConfig, *,
          on_epoch: Callable[[int, Metrics], bool] | None = None, progress: bool = False) -> TrainResult:
    """Train ``model`` on ``data.train`` within the budget, evaluating on ``data.val`` after every (partial) epoch.

    Runs under ``config.seed`` without disturbing the caller's RNG state, on the model's device (the
    data stays in host memory and moves there one batch at a time); a trailing batch of one
    example is dropped (batch norm cannot train on it); at least one step is taken. ``on_epoch(
    index, val_metrics)`` (0-based epoch index, or the index of the ``config.eval_steps`` point
    reached) returning False stops training early. The model is left in eval mode.
    """
    weights = _check_config(data, config)
    tasks = list(data.tasks)
    names = [t.name for t in tasks]
    device = _device(model)
    budget = config.budget
    n = len(data.train)
    bs = min(config.batch_size, n)
    per_epoch = steps_per_epoch(n, config.batch_size)
    max_steps = math.inf
    if budget.epochs is not None:
        max_steps = math.ceil(budget.epochs * per_epoch)
    if budget.steps is not None:
        max_steps = min(max_steps, budget.steps)
    max_seconds = budget.seconds if budget.seconds is not None else math.inf
    total_epochs = max_steps / per_epoch

    inputs = _batch_reader(data.train.x)
    y_all = {t.name: torch.from_numpy(np.ascontiguousarray(data.train.y[t.name])) for t in tasks}
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        aug_gen = torch.Generator().manual_seed(config.seed + 1_000_003)
        log_vars = nn.Parameter(torch.zeros(len(tasks), device=device)) if config.loss_weighting == "uncertainty" else None
        groups: list[dict] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if log_vars is not None:
            groups.append({"params": [log_vars], "weight_decay": 0.0})
        opt = _optimizer(groups, config)
        history: list[dict] = []
        metrics: Metrics = {}
        step = 0
        epoch = 0
        stopped_early = False
        start = time.perf_counter()
        done = False
        points = sorted({int(p) for p in config.eval_steps or () if 0 < p <= max_steps})
        reached = 0

        def checkpoint(train_loss: float, task_sums: dict[str, float], epoch_steps: int) -> Metrics:
            """Validate now and append the history record (and the progress line)."""
            metrics = evaluate(model, data.val, tasks, config.eval_batch_size)
            elapsed = time.perf_counter() - start
            record = {"epoch": epoch, "epochs": step / per_epoch, "steps": step, "train_loss": train_loss,
                      "train_losses": {k: v / epoch_steps for k, v in task_sums.items()},
                      "val": metrics, "seconds": elapsed}
            if log_vars is not None:
                record["log_vars"] = dict(zip(names, log_vars.detach().cpu().tolist()))
            history.append(record)
            if progress:
                print(_progress_line(epoch, total_epochs, train_loss, metrics, tasks, elapsed),
                      file=sys.stderr, flush=True)
            return metrics

        while not done:
            model.train()
            perm = torch.randperm(n, generator=gen)
            batches = [perm[i:i + bs] for i in range(0, n, bs)][:per_epoch]
            loss_sum = 0.0
            task_sums = dict.fromkeys(names, 0.0)
            epoch_steps = 0
            for idx in batches:
                if step >= max_steps or (step > 0 and time.perf_counter() - start >= max_seconds):
                    done = True
                    break
                xb = inputs(idx).to(device)
                if config.augment is not None:
                    xb = config.augment(xb, aug_gen)
                out = _outputs(model, xb, names)
                total = torch.zeros((), device=device)
                for k, t in enumerate(tasks):
                    task_loss = t.loss(out[t.name], y_all[t.name][idx].to(device))
                    value = float(task_loss.detach())
                    if not math.isfinite(value) or value > config.max_loss:
                        why = "is not finite" if not math.isfinite(value) else f"exceeds max_loss {config.max_loss:g}"
                        raise TrainingDiverged(f"training diverged: loss of task {t.name!r} {why} ({value:g}) "
                                               f"at step {step + 1} (epoch {epoch + 1})", t.name, step + 1, value)
                    task_sums[t.name] += value
                    if log_vars is not None:
                        total = total + weights[t.name] * (torch.exp(-log_vars[k]) * task_loss + log_vars[k])
                    else:
                        total = total + weights[t.name] * task_loss
                if not torch.isfinite(total):
                    raise TrainingDiverged(f"training diverged: weighted total loss is not finite at step {step + 1}",
                                           "total", step + 1, float(total))
                opt.zero_grad(set_to_none=True)
                total.backward()
                if config.lr_schedule != "constant":
                    for g in opt.param_groups:
                        g["lr"] = scheduled_lr(config.lr, config.lr_schedule, step, max_steps)
                opt.step()
                loss_sum += float(total.detach())
                step += 1
                epoch_steps += 1
                if points and step == points[0]:
                    points.pop(0)
                    metrics = checkpoint(loss_sum / epoch_steps, task_sums, epoch_steps)
                    if on_epoch is not None and on_epoch(reached, metrics) is False:
                        stopped_early = done = True
                        break
                    reached += 1
            else:
                done = step >= max_steps or time.perf_counter() - start >= max_seconds
            if epoch_steps == 0 or stopped_early:
                break
            if config.eval_steps is None:
                metrics = checkpoint(loss_sum / epoch_steps, task_sums, epoch_steps)
                if on_epoch is not None and on_epoch(epoch, metrics) is False:
                    stopped_early = True
                    break
            epoch += 1
        if config.eval_steps is not None and not stopped_early and (not history or history[-1]["steps"] != step):
            metrics = checkpoint(loss_sum / max(epoch_steps, 1), task_sums, max(epoch_steps, 1))
        if not metrics:
            metrics = evaluate(model, data.val, tasks, config.eval_batch_size)
    model.eval()
    return TrainResult(
        metrics=metrics, history=history, epochs=step / per_epoch, steps=step,
        seconds=time.perf_counter() - start, stopped_early=stopped_early,
        log_vars=dict(zip(names, log_vars.detach().cpu().tolist())) if log_vars is not None else None,
    )
