"""Final training: found designs and baselines trained from scratch at one budget and measured on the test split.

A search ranks designs on short trainings and the validation split; what a user ships is a model
trained to completion. ``train_final`` rebuilds a network (architecture, layout, quantization
policy), trains it from scratch with the run's data and training settings at the final budget,
exports it, checks parity in onnxruntime, applies its policy and measures the file on the test
split (and validation), beside the same trained model in fp32 and all int8. Records go to
``final/<budget tag>/NAME.json`` with the file ``NAME.onnx`` beside them, written through temporary
files and renames, so a training that fails or is killed leaves the run's records as they were.
``compare`` says whether a found model beats a baseline: at least as good on every task objective
at no more cost.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nasmtl.config import LR_SCHEDULES, ConfigError, Objective, RunConfig
from nasmtl.errors import NasmtlError, first_line
from nasmtl.files import fsync_file, write_json
from nasmtl.run.rundir import RunDir
from nasmtl.search.baselines import Candidate


class FinalTrainingError(NasmtlError, RuntimeError):
    """A final training that failed; the run's records are as they were before it started."""


@dataclass(frozen=True)
class FinalBudget:
    """The budget of final training (steps or epochs, never seconds: results must not depend on machine load)."""

    epochs: float | None
    steps: int | None
    batch_size: int
    lr: float
    lr_schedule: str = "constant"

    @property
    def tag(self) -> str:
        """A folder name that identifies the budget (records of one tag are comparable)."""
        parts = ([f"steps{self.steps}"] if self.steps is not None else []) + \
                ([f"epochs{self.epochs:g}"] if self.epochs is not None else [])
        schedule = [] if self.lr_schedule == "constant" else [self.lr_schedule]
        return "-".join(parts + [f"bs{self.batch_size}", f"lr{self.lr:g}"] + schedule)

    def describe(self) -> str:
        """``600 steps, batch 128, lr 0.001`` (``lr 0.001 (cosine)`` for a decaying rate)."""
        what = " or ".join(([f"{self.steps} steps"] if self.steps is not None else [])
                           + ([f"{self.epochs:g} epochs"] if self.epochs is not None else []))
        schedule = "" if self.lr_schedule == "constant" else f" ({self.lr_schedule})"
        return f"{what}, batch {self.batch_size}, lr {self.lr:g}{schedule}"


def final_budget(cfg: RunConfig, epochs: float | None = None, steps: int | None = None,
                 batch_size: int | None = None, lr: float | None = None,
                 lr_schedule: str | None = None) -> FinalBudget:
    """The run's final budget (``[final]``, falling back to ``[train]``), with overrides; bad values are errors."""
    for key, v in (("--epochs", epochs), ("--steps", steps), ("--batch-size", batch_size), ("--lr", lr)):
        if v is not None and not v > 0:
            raise ConfigError(f"final training: {key} must be > 0, got {v}")
    if lr_schedule is not None and lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"final training: --lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    f, t = cfg.final, cfg.train
    if epochs is not None or steps is not None:
        e, s = epochs, steps
    elif f.epochs is not None or f.steps is not None:
        e, s = f.epochs, f.steps
    else:
        e, s = t.epochs, t.steps
    if e is None and s is None:
        raise ConfigError(f"{cfg.source}: final training needs [final] steps or epochs")
    return FinalBudget(e, s, batch_size or f.batch_size or t.batch_size, lr or f.lr or t.lr,
                       lr_schedule or f.lr_schedule or t.lr_schedule)


@dataclass
class FinalRecord:
    """One finally trained model: what it is, how it was trained, and its measures (``test``, ``val``)."""

    name: str
    kind: str
    design: str
    budget: dict[str, Any]
    seed: int
    device: str
    steps: int
    train_seconds: float
    test: dict[str, float]
    """The model as shipped (its own quantization policy) on the test split: task metrics, bytes, latency_ms, ..."""
    val: dict[str, float]
    onnx: str
    parity: float
    trial: int | None = None
    search: dict[str, float] | None = None
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same trained model in fp32 and all int8 on the test split (``{"fp32": ..., "int8": ...}``)."""
    policy: str | None = None
    source: str = ""
    order: int = 0
    """Place of the model in its final phase (found models by rank, then baselines as configured)."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FinalRecord":
        """The inverse of ``asdict`` (unknown keys ignored, so newer records still read)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def record_name(candidate: Candidate) -> str:
    """``trial-00017`` or ``baseline-two-branch-cnn``."""
    if candidate.kind == "found":
        return RunDir.found_name(candidate.trial)
    return RunDir.baseline_name(candidate.name)


def train_final(candidate: Candidate, data: Any, cfg: RunConfig, budget: FinalBudget, files: RunDir,
                device: str = "cpu", latency_runs: int = 20, order: int = 0) -> FinalRecord:
    """Train one candidate from scratch at ``budget`` and measure it on the test split (see the module doc);
    its record and model go to ``files.final_dir(budget.tag)``."""
    import nasmtl.onnx as nx
    from nasmtl.arch import to_torch
    from nasmtl.onnx.policy import baselines, evaluate_onnx, measure_policy
    from nasmtl.search.evaluate import eval_batch_size, train_augment
    from nasmtl.train import Budget, TrainConfig, train

    t = cfg.train
    tc = TrainConfig(budget=Budget(epochs=budget.epochs, steps=budget.steps), batch_size=budget.batch_size,
                     lr=budget.lr, lr_schedule=budget.lr_schedule,  # type: ignore[arg-type]
                     weight_decay=t.weight_decay, optimizer=t.optimizer,  # type: ignore[arg-type]
                     seed=cfg.search.seed, loss_weighting=t.loss_weighting,  # type: ignore[arg-type]
                     augment=train_augment(cfg))
    tc.eval_batch_size = eval_batch_size(candidate.arch, tc.eval_batch_size)
    name = record_name(candidate)
    out_dir = files.final_dir(budget.tag)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = to_torch(candidate.arch, seed=cfg.search.seed).to(device)
    result = train(model, data, tc)
    model = model.cpu()
    tasks = [x.name for x in data.tasks]
    calib = data.train.x[:64]
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=out_dir) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        meta = nx.model_metadata(data, candidate.design, candidate.policy)
        nx.export_onnx(model, tuple(data.input_shape), fp32, tasks, metadata=meta)
        parity = nx.check_parity(model, fp32, data.test.x[:256], atol=1e-3, rtol=1e-5)
        variants = baselines(fp32, calib, data, Path(tmp), "test", latency_runs)
        shipped = fp32
        if candidate.policy is not None:
            quant = Path(tmp) / "quant.onnx"
            test = measure_policy(fp32, quant, candidate.policy, calib, data, "test", latency_runs).values
            shipped = quant
        else:
            test = dict(variants["fp32"])
        stats = nx.graph_stats(shipped)
        test.update(params=float(stats.params), macs=float(stats.macs))
        val = evaluate_onnx(shipped, data, "val")
        nx.write_metadata(shipped, {"nasmtl.metrics": {"split": "test", "budget": budget.describe(),
                                                       "seed": cfg.search.seed, "values": test, "val": val}})
        rec = FinalRecord(name=name, kind=candidate.kind, design=candidate.design, budget=asdict(budget),
                          seed=cfg.search.seed, device=device, steps=result.steps,
                          train_seconds=round(result.seconds, 2), test=test, val=val,
                          onnx=RunDir.final_onnx_name(budget.tag, name), parity=float(parity.worst),
                          trial=candidate.trial, search=candidate.search, variants=variants,
                          policy=str(candidate.policy) if candidate.policy is not None else None,
                          source=candidate.source, order=order)
        fsync_file(shipped)
        os.replace(shipped, files.final_onnx(budget.tag, name))
        write_json(files.final_record(budget.tag, name), asdict(rec))
    return rec



def load_final(run_dir: Path) -> dict[str, list[FinalRecord]]:
    """Every final record of a run by budget tag (a record that does not read is skipped, never fatal)."""
    out: dict[str, list[FinalRecord]] = {}
    for folder in RunDir.of(run_dir).final_dirs():
        recs = []
        for f in sorted(folder.glob("*.json")):
            try:
                recs.append(FinalRecord.from_json(json.loads(f.read_text(encoding="utf-8"))))
            except (ValueError, TypeError):
                continue
        if recs:
            out[folder.name] = recs
    return out


def task_objectives(objectives: Sequence[Objective]) -> list[Objective]:
    """The objectives that measure a task's quality (``task.metric``, not a cost such as ``left.bytes``)."""
    from nasmtl.onnx.task_costs import TASK_COSTS

    return [o for o in objectives if o.task is not None and o.name.split(".", 1)[1] not in TASK_COSTS]


def select_finalists(members: Sequence[Any], objectives: Sequence[Objective], k: int) -> list[Any]:
    """Up to ``k`` Pareto members (``.values`` in objective order) to train at the final budget.

    The best by average rank over the task objectives first; then, where the run has a cost
    objective, greedily the member that adds the most hypervolume to those chosen, measured over
    the task objectives and the logarithm of the first cost (a halving of size counts the same at
    every size) scaled to the front's range, so the finalists are the front's knees: small models
    that lose little, not only the extremes; the rest by rank. With more
    than two task objectives beside the cost (hypervolume here is exact up to 3-D), members at most
    half the cost of every one chosen so far are taken, best first.
    """
    if k <= 0 or not members:
        return []
    names = [o.name for o in objectives]
    quality = task_objectives(objectives) or list(objectives)
    costs = [o for o in objectives if o not in quality and o.direction == "minimize"]

    def rank_sum(m: Any) -> float:
        total = 0.0
        for o in quality:
            i = names.index(o.name)
            sign = -1.0 if o.direction == "maximize" else 1.0
            vals = sorted(sign * x.values[i] for x in members)
            total += vals.index(sign * m.values[i])
        return total

    ordered = sorted(members, key=lambda m: (rank_sum(m), getattr(m, "number", 0)))
    chosen = [ordered[0]]
    if costs and len(quality) <= 2:
        chosen += _knees(ordered[1:], chosen, quality + costs[:1], names, k - 1)
    elif costs:
        ci = names.index(costs[0].name)
        for m in ordered[1:]:
            if len(chosen) >= k:
                break
            if m.values[ci] <= 0.5 * min(c.values[ci] for c in chosen):
                chosen.append(m)
    for m in ordered:
        if len(chosen) >= k:
            break
        if m not in chosen:
            chosen.append(m)
    return chosen


def _knees(pool: Sequence[Any], chosen: Sequence[Any], objs: Sequence[Objective], names: Sequence[str],
           k: int) -> list[Any]:
    """Up to ``k`` of ``pool``, each the one adding most hypervolume to ``chosen`` and those picked
    before it. The last objective is a cost, taken in log scale; every objective is scaled to the
    front's range with the reference point 10% beyond its worst value (the usual normalised
    hypervolume), so a member that is cheap but far worse adds little. Members adding nothing are left."""
    from nasmtl.search.hypervolume import hypervolume

    idx = [names.index(o.name) for o in objs]
    sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objs])
    everyone = [*chosen, *pool]
    pts = np.array([[float(m.values[i]) for i in idx] for m in everyone]) * sign
    pts[:, -1] = np.log(np.maximum(pts[:, -1], 1e-12))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    z = (pts - lo) / np.where(hi > lo, hi - lo, 1.0)
    ref = [1.1] * len(objs)
    current = list(range(len(chosen)))
    base = hypervolume(z[current], ref) if current else 0.0
    picked: list[int] = []
    while len(picked) < k:
        best, gain = None, 0.0
        for j in range(len(chosen), len(everyone)):
            if j in picked:
                continue
            g = hypervolume(z[current + [j]], ref) - base
            if g > gain + 1e-12:
                best, gain = j, g
        if best is None:
            break
        picked.append(best)
        current.append(best)
        base += gain
    return [everyone[j] for j in picked]


@dataclass
class Verdict:
    """Whether ``found`` beats ``baseline`` on test: at least as good on every task objective at no more cost."""

    found: str
    baseline: str
    beats: bool
    text: str


def compare(found: Mapping[str, float], baseline: Mapping[str, float], objectives: Sequence[Objective],
            found_name: str, baseline_name: str) -> Verdict:
    """The verdict of one found model against one baseline over the run's objectives (test values)."""
    parts, ok = [], True
    for o in objectives:
        if o.name not in found or o.name not in baseline:
            continue
        f, b = float(found[o.name]), float(baseline[o.name])
        ok = ok and _no_worse(found, baseline, o)
        if o in task_objectives(objectives):
            parts.append(f"{o.name} {f:.4g} vs {b:.4g}")
        else:
            parts.append(f"{o.name} {f / b:.2f}x" if b else f"{o.name} {f:.4g} vs 0")
    verb = "beats" if ok else "does not beat"
    return Verdict(found_name, baseline_name, ok, f"{found_name} {verb} {baseline_name}: " + ", ".join(parts))


def _no_worse(found: Mapping[str, float], base: Mapping[str, float], o: Objective) -> bool:
    """Whether ``found`` is at least as good as ``base`` on objective ``o`` (True where either lacks it)."""
    if o.name not in found or o.name not in base:
        return True
    return found[o.name] >= base[o.name] if o.direction == "maximize" else found[o.name] <= base[o.name]


def _cost_ratio(text: str) -> float:
    """The first ``NAME 0.38x`` ratio in a verdict's text (the smaller, the cheaper the winner)."""
    import re

    m = re.search(r" ([0-9.]+)x", text)
    return float(m.group(1)) if m else float("inf")


def baseline_rows(records: Sequence[FinalRecord]) -> list[tuple[str, dict[str, float]]]:
    """Each baseline as designed (fp32) and all int8, as ``(label, test values)``."""
    rows = []
    for r in records:
        if r.kind != "baseline":
            continue
        name = RunDir.baseline_of(r.name)
        rows.append((name if r.policy is None else f"{name} ({r.policy})", r.test))
        if "int8" in r.variants and r.policy is None:
            rows.append((f"{name} int8", r.variants["int8"]))
    return rows


def verdicts(records: Sequence[FinalRecord], objectives: Sequence[Objective]) -> list[Verdict]:
    """For each baseline row, whether some found model beats it (the first that does, else the closest)."""
    found = [r for r in records if r.kind == "found"]
    out = []
    for label, values in baseline_rows(records):
        vs = [compare(r.test, values, objectives, f"trial {r.trial}", label) for r in found]
        winners = [v for v in vs if v.beats]
        if winners:
            out.append(min(winners, key=lambda v: _cost_ratio(v.text)))
        elif vs:
            near = max(range(len(vs)), key=lambda i: sum(_no_worse(found[i].test, values, o) for o in objectives))
            out.append(Verdict("", label, False, f"no found model beats {label} (nearest, "
                               + vs[near].text.split(" does not beat ", 1)[0] + ": "
                               + vs[near].text.split(": ", 1)[1] + ")"))
    return out


def run_final(run_dir: Path, cfg: RunConfig, trials: Sequence[Any], *, with_baselines: bool = True,
              budget: FinalBudget | None = None, device: str | None = None, force: bool = False,
              progress: Callable[[str], None] | None = None, status: Any = None,
              space: Any = None, evaluator: Any = None) -> list[FinalRecord]:
    """Train ``trials`` (frozen optuna trials of the run) and the run's baselines at the final budget.

    Records that exist for the budget are kept (so an interrupted final phase resumes), unless
    ``force``. Returns the records of this budget, found models first. ``status``: a
    ``nasmtl.progress.Progress`` whose status line shows models done, time left and the last result.
    ``space`` and ``evaluator``: the run's, when the caller has them built (else built from ``cfg``).
    """
    from nasmtl.search.baselines import baseline_candidates
    from nasmtl.search.evaluate import build_evaluator, config_device, load_data, load_space

    budget = budget or final_budget(cfg)
    if space is None or evaluator is None:
        data = load_data(cfg)
        space = load_space(cfg, data)
        evaluator = build_evaluator(cfg, space, data)
    data = evaluator.data
    device = device or config_device(cfg)
    files = RunDir.of(run_dir)
    out_dir = files.final_dir(budget.tag)
    cands = [found_candidate(space, evaluator.build, cfg, t) for t in trials]
    if with_baselines:
        cands += baseline_candidates(cfg.search.baselines, data, space, evaluator.build, cfg.resolve, cfg.space.head,
                                     cfg.source)
    say = progress or (lambda line: None)
    records = []
    if status is not None:
        status.update(0, total=len(cands))
    for i, c in enumerate(cands, 1):
        path = files.final_record(budget.tag, record_name(c))
        if path.is_file() and files.final_onnx(budget.tag, record_name(c)).is_file() and not force:
            records.append(FinalRecord.from_json(json.loads(path.read_text(encoding="utf-8"))))
            say(f"final {i}/{len(cands)} {record_name(c)}: kept (already trained at {budget.describe()})")
            continue
        t0 = time.perf_counter()
        say(f"final {i}/{len(cands)} {record_name(c)}: training from scratch, {budget.describe()}, on {device}")
        try:
            rec = train_final(c, data, cfg, budget, files, device, cfg.search.latency_runs, i)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            if out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
            first = first_line(e, 200, more="", empty="")
            raise FinalTrainingError(f"{run_dir}: final training of {record_name(c)} failed "
                                     f"({type(e).__name__}: {first}); the run's records are unchanged") from e
        records.append(rec)
        shown = ", ".join(f"{o.name} {rec.test[o.name]:.4g}" for o in cfg.objectives if o.name in rec.test)
        say(f"final {i}/{len(cands)} {record_name(c)}: test {shown} ({time.perf_counter() - t0:.0f} s)")
        if status is not None:
            status.update(i, f"{record_name(c)} {shown}" if i < len(cands) else "", total=len(cands))
    if status is not None:
        status.close()
    return records


def found_candidate(space: Any, build: Callable[[Any], Any], cfg: RunConfig, trial: Any) -> Candidate:
    """The network of a finished trial, from its stored design string."""
    key = trial.user_attrs.get("design")
    if not key:
        raise ConfigError(f"trial {trial.number} holds no design string (was it made by `nasmtl search`?)")
    try:
        design = space.decode(key)
        arch = build(design)
    except Exception as e:
        raise ConfigError(f"trial {trial.number}: its design does not build in the run's space: "
                          f"{first_line(e, None)}") from None
    values = dict(zip(cfg.objective_names, trial.values)) if trial.values else None
    return Candidate(f"trial-{trial.number}", "found", arch, getattr(design, "quant", None), key, trial.number,
                     values)


def copy_model(rec: FinalRecord, run_dir: Path, dest: Path) -> Path:
    """Copy a record's ONNX file to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(run_dir) / rec.onnx, dest)
    return dest
