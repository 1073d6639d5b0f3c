"""The study loop: ask a trial, get its design, evaluate it, tell the result, record and report.

The engine sees a space only through the ``SearchSpace`` protocol and a model only through an
``Evaluator`` (it never imports torch). Every trial records its design (canonical string and
decisions), per-epoch partial objectives, its outcome and the hypervolume after it; completed
trials keep their ONNX file under ``trials/NNNNN.onnx`` and a JSON record next to it, and
``pareto/`` holds links to the current Pareto members.

Duplicates: a design whose canonical string already has a completed trial is not trained again;
its trial is completed with the earlier values (user attr ``duplicate_of``) so samplers learn
from it, and it does not count towards the trial budget. The same holds for a design whose file
would be the same as an earlier one's (an evaluator's ``effective_key``: quantization policies
that differ only where a precision cannot apply).
"""

from __future__ import annotations

import datetime
import math
import os
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nasmtl.config import Objective
from nasmtl.errors import first_line
from nasmtl.files import fsync_file, read_json, write_json
from nasmtl.run.rundir import RunDir
from nasmtl.search.evaluate import Evaluator, TrialFailed, TrialStopped
from nasmtl.search.hypervolume import hypervolume
from nasmtl.search.pareto import pareto_indices
from nasmtl.search.pruning import Pruner
from nasmtl.search.samplers import Proposer, takes_keyword

MAX_DUPLICATES_IN_A_ROW = 100


class TrialTimeout(Exception):
    """The hard per-trial watchdog fired."""


@dataclass
class SearchBudget:
    """When a search stops: trained trials in the study, wall seconds of this process, failures in a row."""

    trials: int | None = None
    seconds: float | None = None
    max_failures: int = 20


@dataclass
class Outcome:
    """What happened to one trial."""

    number: int
    state: str
    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0
    hypervolume: float = 0.0


@dataclass
class Repair:
    """What :meth:`Engine.repair` found: records rewritten from the storage, ONNX files damaged (trial -> why)."""

    rewritten: list[int] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)


_RECORD_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "fail"}
"""Finished trial states that have a ``trials/NNNNN.json`` record (duplicates have none)."""


def trial_record(number: int, state: str, values: dict[str, float], reason: str, seconds: float,
                 hv: float, attrs: dict[str, Any], worker: str | None) -> dict[str, Any]:
    """The JSON record of one finished trial (``trials/NNNNN.json``)."""
    rec = {"trial": number, "state": state, "design": attrs.get("design"), "choices": attrs.get("choices"),
           "objectives": values, "reason": reason, "seconds": seconds, "hypervolume": hv, "worker": worker,
           "epochs": {k: v for k, v in attrs.items() if k.startswith(("epoch:", "rung:"))}}
    for k in ("rung", "steps"):
        if k in attrs:
            rec[k] = attrs[k]
    if state == "complete":
        rec["onnx"] = RunDir.trial_onnx_name(number)
    return rec


def frozen_record(t: FrozenTrial, names: Sequence[str]) -> dict[str, Any]:
    """The record of a finished trial rebuilt from the storage alone (what :func:`trial_record` wrote)."""
    a = t.user_attrs
    state = _RECORD_STATES[t.state]
    values = {k[len("value:"):]: v for k, v in a.items() if k.startswith("value:")}
    if not values and t.values is not None:
        values = dict(zip(names, t.values))
    reason = {"fail": f"{a.get('fail_reason', 'error')}: {a.get('fail_message', '')}",
              "pruned": str(a.get("stopped", ""))}.get(state, "")
    return trial_record(t.number, state, values, reason, float(a.get("seconds", 0.0)),
                        float(a.get("hypervolume", 0.0)), a, a.get("worker"))


@dataclass
class Summary:
    """The study after a search: counts, hypervolume and the Pareto members' trial numbers."""

    completed: int
    failed: int
    pruned: int
    duplicates: int
    hypervolume: float
    pareto: list[int]
    stop_reason: str


def worker_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trained_completes(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials that were trained (not copies of a duplicate)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]


def failed_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Failed trials, less those closed because another worker was training the same design."""
    return [t for t in trials if t.state == TrialState.FAIL and "duplicate_of" not in t.user_attrs]


def duplicate_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials not trained because their design was trained (or was being trained) by another trial."""
    return [t for t in trials if "duplicate_of" in t.user_attrs and t.state in (TrialState.COMPLETE, TrialState.FAIL)]


def feasible(t: FrozenTrial) -> bool:
    """Whether a completed trial meets every objective bound."""
    return not any(v > 0 for v in t.user_attrs.get("constraint_violation", []))


def fidelity(t: FrozenTrial) -> float:
    """The training steps a trial's values were measured after (a run without a schedule: all equal)."""
    return float(t.user_attrs.get("steps", math.inf))


def top_fidelity(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trained, feasible completed trials measured at the highest fidelity any of them reached.

    Under a successive-halving schedule a trial stopped at a low rung is measured after fewer steps,
    so its values are not comparable with those of a trial trained to the top; the front and the
    hypervolume are those of the top rung reached so far.
    """
    pool = [t for t in trained_completes(trials) if feasible(t)]
    if not pool:
        return []
    top = max(fidelity(t) for t in pool)
    return [t for t in pool if fidelity(t) == top]


def pareto_trials(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The feasible completed trials of the top fidelity on the Pareto front.

    Trials of different designs with equal values are all members (as in optuna's ``best_trials``);
    copies of a duplicate design are not trained trials and never appear.
    """
    pool = top_fidelity(trials)
    if not pool:
        return []
    return sorted((pool[i] for i in pareto_indices([t.values for t in pool], directions)), key=lambda t: t.number)


def study_hypervolume(trials: Sequence[FrozenTrial], objectives: Sequence[Objective],
                      extra: Sequence[float] | None = None, extra_fidelity: float = math.inf) -> float:
    """Hypervolume of the top-fidelity feasible completed trials (plus ``extra`` values measured at
    ``extra_fidelity``) against the config's reference."""
    pool = top_fidelity(trials)
    top = fidelity(pool[0]) if pool else -math.inf
    pts = [t.values for t in pool] if extra is None or extra_fidelity <= top else []
    if extra is not None and extra_fidelity >= top:
        pts.append(list(extra))
    if not pts:
        return 0.0
    return hypervolume(np.array(pts, dtype=float), [o.reference for o in objectives],
                       [o.direction for o in objectives])


ORPHAN_SECONDS = 60.0
"""A RUNNING trial with no ``worker`` attribute this long after it started lost its process between
``study.ask()`` and its first attribute (a live engine writes it at once): no heartbeat will ever fail it."""


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead processes on this host FAIL (reason recorded), and trials whose process
    died before it recorded itself; RDB heartbeats fail the rest."""
    storage = study._storage
    if hasattr(storage, "get_heartbeat_interval") and storage.get_heartbeat_interval():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    failed = []
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = str(t.user_attrs.get("worker", ""))
        h, _, pid = w.rpartition(":")
        dead = h == host and pid.isdigit() and not _pid_alive(int(pid))
        orphan = not w and t.datetime_start is not None and \
            (now - t.datetime_start).total_seconds() > ORPHAN_SECONDS
        if dead or orphan:
            try:
                study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker died (process gone)" if dead
                                                   else "worker died before it recorded itself")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                failed.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    return failed


class _Heartbeat:
    """Records RDB heartbeats of one trial from a thread (optuna does this only inside ``optimize``)."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        if interval:
            storage.record_heartbeat(trial_id)

            def beat() -> None:
                while not self._stop.wait(interval):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:
                        pass

            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Watchdog:
    """Raises ``TrialTimeout`` in the main thread after ``seconds`` (SIGALRM; a no-op elsewhere)."""

    def __init__(self, seconds: float | None) -> None:
        self._armed = bool(seconds) and threading.current_thread() is threading.main_thread() \
            and hasattr(signal, "setitimer")
        self._seconds = seconds

    def __enter__(self) -> "_Watchdog":
        if self._armed:
            def fire(signum: int, frame: Any) -> None:
                raise TrialTimeout(f"trial exceeded the hard time limit of {self._seconds:g} s")

            self._old = signal.signal(signal.SIGALRM, fire)
            signal.setitimer(signal.ITIMER_REAL, float(self._seconds))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


@dataclass
class Engine:
    """Runs trials of one study until the budget is reached."""

    study: optuna.Study
    space: Any
    evaluator: Evaluator
    objectives: Sequence[Objective]
    proposer: Proposer
    run_dir: Path
    budget: SearchBudget
    pruner: Pruner | None = None
    trial_timeout: float | None = None
    progress: Callable[[str], None] | None = None
    status: Any = None
    """A ``nasmtl.progress.Progress`` whose status line shows trials done, time left and the best values."""
    shared: bool = False
    """The storage is shared with workers whose files live elsewhere (any ``--storage``; not the run's own journal)."""
    _observed: set[int] = field(default_factory=set, repr=False)
    _designs: dict[str, int] = field(default_factory=dict, repr=False)
    _files: dict[str, int] = field(default_factory=dict, repr=False)
    _damaged: set[int] = field(default_factory=set, repr=False)

    @property
    def files(self) -> RunDir:
        """The run directory's layout."""
        return RunDir(self.run_dir)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    def _sync(self) -> list[FrozenTrial]:
        """Read the study; feed newly finished trials to the proposer and the duplicate index."""
        trials = self.study.get_trials(deepcopy=False)
        self.proposer.learn_distributions(trials)
        for t in trials:
            if t.number in self._observed or not t.state.is_finished():
                continue
            self._observed.add(t.number)
            key = t.user_attrs.get("design")
            if key is None:
                continue
            if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
                self._designs.setdefault(key, t.number)
                if "file_key" in t.user_attrs:
                    self._files.setdefault(t.user_attrs["file_key"], t.number)
            try:
                design = self.space.decode(key)
            except Exception:
                continue
            ok = t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
            steps = t.user_attrs.get("steps") if ok else None
            if steps is not None and takes_keyword(self.proposer.observe, "fidelity"):
                self.proposer.observe(design, list(t.values), fidelity=float(steps))
            else:
                self.proposer.observe(design, list(t.values) if ok else None)
        return trials

    def _stop_reason(self, trials: Sequence[FrozenTrial], start: float, failures: int, dups: int) -> str | None:
        b = self.budget
        if b.trials is not None:
            done = len(trained_completes(trials)) + sum(t.state == TrialState.PRUNED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done + running >= b.trials:
                return f"trial budget reached ({done} trained trials)"
        if b.seconds is not None and time.perf_counter() - start >= b.seconds:
            return f"time budget of {b.seconds:g} s reached"
        if failures >= b.max_failures:
            return f"{failures} failures in a row"
        if dups >= MAX_DUPLICATES_IN_A_ROW:
            return f"{dups} duplicate designs in a row (space exhausted?)"
        return None

    def run(self) -> Summary:
        """Run trials until the budget is reached; Ctrl-C fails the current trial and re-raises."""
        self.files.trials_dir.mkdir(parents=True, exist_ok=True)
        dead = fail_dead_trials(self.study)
        if dead:
            self._say(f"marked {len(dead)} trial(s) of dead workers failed: {', '.join(map(str, dead))}")
        self.repair()
        start = time.perf_counter()
        failures = dups = 0
        while True:
            trials = self._sync()
            reason = self._stop_reason(trials, start, failures, dups)
            if reason is not None:
                break
            out = self.run_trial()
            failures = failures + 1 if out.state == "fail" else 0
            dups = dups + 1 if out.state == "duplicate" else 0
            fail_dead_trials(self.study)
            if self.status is not None:
                done = self.study.get_trials(deepcopy=False)
                self.status.update(len(trained_completes(done)), self.best_text(done), self.budget.trials)
        if self.status is not None:
            self.status.close()
        trials = self._sync()
        summary = self.summary(trials, reason)
        self._say(f"done: {reason}; {summary.completed} completed, {summary.failed} failed, "
                  f"{summary.pruned} stopped early, {summary.duplicates} duplicates; hypervolume "
                  f"{summary.hypervolume:.6g}; Pareto front: {len(summary.pareto)} trial(s) "
                  f"{', '.join(map(str, summary.pareto))}")
        return summary

    def best_text(self, trials: Sequence[FrozenTrial]) -> str:
        """The best value of each objective among the top-fidelity feasible trials (``left.accuracy 0.93``)."""
        pool = top_fidelity(trials)
        if not pool:
            return ""
        parts = []
        for i, o in enumerate(self.objectives):
            vals = [t.values[i] for t in pool]
            parts.append(f"{o.name} {_fmt(max(vals) if o.direction == 'maximize' else min(vals))}")
        return ", ".join(parts)

    def summary(self, trials: Sequence[FrozenTrial], reason: str = "") -> Summary:
        """Counts, hypervolume and Pareto members of the study."""
        return Summary(
            completed=len(trained_completes(trials)),
            failed=len(failed_trials(trials)),
            pruned=sum(t.state == TrialState.PRUNED for t in trials),
            duplicates=len(duplicate_trials(trials)),
            hypervolume=study_hypervolume(trials, self.objectives),
            pareto=[t.number for t in pareto_trials(trials, self.directions)],
            stop_reason=reason,
        )

    # ---- one trial ----------------------------------------------------------------------------

    def run_trial(self) -> Outcome:
        """Ask, propose, evaluate (or copy a duplicate), tell and record one trial."""
        with warnings.catch_warnings():
            # optuna warns that RDB heartbeats belong to Study.optimize; this engine records them itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = self.study.ask()
        t0 = time.perf_counter()
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("run_dir", str(self.run_dir.resolve()))
        onnx_path = self.files.trial_onnx(trial.number)
        beat = _Heartbeat(self.study._storage, trial._trial_id)
        try:
            try:
                stored = trial.user_attrs.get("design")
                design = self.space.decode(stored) if stored else self.proposer.propose(trial)
                key = self.space.encode(design)
                # from here on the canonical design, so its decisions (choices, params) describe the string recorded
                design = self.space.decode(key)
                trial.set_user_attr("design", key)
                trial.set_user_attr("choices", {str(k): str(v) for k, v in self.space.choices(design).items()})
                self.proposer.record(trial, self.space, design)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                return self._fail(trial, "sampling", f"{type(e).__name__}: {e}", t0)
            earlier = self._designs.get(key)
            if earlier is not None:
                return self._duplicate(trial, earlier, t0)
            busy = self._trained_elsewhere(key, trial.number)
            if busy is not None:
                return self._busy(trial, busy, t0)
            file_key = self._file_key(design)
            if file_key is not None:
                trial.set_user_attr("file_key", file_key)
                same = self._files.get(file_key)
                if same is not None:
                    return self._duplicate(trial, same, t0, f"builds the same file as trial {same} "
                                                            f"(precisions that cannot apply differ)")
            try:
                with _Watchdog(self.trial_timeout * 1.5 + 30 if self.trial_timeout else None):
                    values = self.evaluator.evaluate(design, onnx_path, self._epoch_callback(trial))
            except TrialStopped as e:
                onnx_path.unlink(missing_ok=True)
                return self._finish(trial, "pruned", e.partial, t0, reason=str(e))
            except TrialFailed as e:
                onnx_path.unlink(missing_ok=True)
                return self._fail(trial, e.reason, str(e), t0)
            except TrialTimeout as e:
                onnx_path.unlink(missing_ok=True)
                return self._fail(trial, "timeout", str(e), t0)
            except KeyboardInterrupt:
                onnx_path.unlink(missing_ok=True)
                self._fail(trial, "interrupted", "interrupted by the user (Ctrl-C)", t0)
                raise
            except Exception as e:
                onnx_path.unlink(missing_ok=True)
                return self._fail(trial, "error", f"{type(e).__name__}: {first_line(e, 300, more='')}", t0)
            if onnx_path.exists():
                fsync_file(onnx_path)      # on disk before the storage says the trial is complete
            return self._finish(trial, "complete", values, t0)
        finally:
            beat.stop()

    def _epoch_callback(self, trial: optuna.Trial) -> Callable[[int, dict[str, float]], bool]:
        prefix = self.pruner.record_key if self.pruner is not None else "epoch"

        def on_epoch(epoch: int, partial: dict[str, float]) -> bool:
            rec = {k: float(v) for k, v in partial.items() if k in self.names}
            key = f"{prefix}:{epoch}"
            trial.set_user_attr(key, rec)
            if self.pruner is None:
                return True
            others = [t.user_attrs[key] for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                if key in t.user_attrs and "duplicate_of" not in t.user_attrs]
            return not self.pruner.should_stop(epoch, rec, others)

        return on_epoch

    def _violations(self, values: Sequence[float]) -> list[float]:
        out = []
        for o, v in zip(self.objectives, values):
            if o.bound is None:
                out.append(0.0)
            else:
                out.append(max(0.0, (o.bound - v) if o.direction == "maximize" else (v - o.bound)))
        return out

    def _finish(self, trial: optuna.Trial, state: str, values: dict[str, float], t0: float,
                reason: str = "") -> Outcome:
        seconds = time.perf_counter() - t0
        trial.set_user_attr("seconds", seconds)
        values = dict(values)
        for k in ("rung", "steps"):
            if k in values:
                trial.set_user_attr(k, int(values.pop(k)))
        for k, v in values.items():
            trial.set_user_attr(f"value:{k}", float(v))
        if state == "pruned":
            trial.set_user_attr("stopped", reason)
            self.study.tell(trial, state=TrialState.PRUNED)
            out = Outcome(trial.number, "pruned", values, reason, seconds)
        else:
            vec = [float(values[n]) for n in self.names]
            violations = self._violations(vec)
            trial.set_user_attr("constraint_violation", violations)
            _set_constraints(trial, {o.name: v for o, v in zip(self.objectives, violations) if o.bound is not None})
            feasible_now = not any(x > 0 for x in violations)
            hv = study_hypervolume(self.study.get_trials(deepcopy=False), self.objectives,
                                   vec if feasible_now else None, float(trial.user_attrs.get("steps", math.inf)))
            trial.set_user_attr("hypervolume", hv)
            self.study.tell(trial, vec)
            out = Outcome(trial.number, "complete", values, "", seconds, hv)
        self._record(trial.number, out, trial)
        self._say(self._line(out))
        return out

    def _file_key(self, design: Any) -> str | None:
        """The evaluator's ``effective_key`` of a design (None when it has none or cannot tell: the
        evaluation itself then reports what is wrong with the design)."""
        effective = getattr(self.evaluator, "effective_key", None)
        if effective is None:
            return None
        try:
            return effective(design)
        except KeyboardInterrupt:
            raise
        except Exception:
            return None

    def _duplicate(self, trial: optuna.Trial, earlier: int, t0: float, why: str = "") -> Outcome:
        prev = self.study.get_trials(deepcopy=False)[earlier]
        trial.set_user_attr("duplicate_of", earlier)
        if "constraint_violation" in prev.user_attrs:
            trial.set_user_attr("constraint_violation", prev.user_attrs["constraint_violation"])
        _set_constraints(trial, {k: v for k, v in prev.constraints.items() if not k.isdigit()})
        self.study.tell(trial, list(prev.values))
        out = Outcome(trial.number, "duplicate", dict(zip(self.names, prev.values)),
                      why or f"same design as trial {earlier}", time.perf_counter() - t0)
        self._say(self._line(out))
        return out

    def _trained_elsewhere(self, key: str, number: int) -> int | None:
        """An earlier trial, still running (another worker), with the same design; the later one gives way."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number < number and t.user_attrs.get("design") == key:
                return t.number
        return None

    def _busy(self, trial: optuna.Trial, running: int, t0: float) -> Outcome:
        """Close a trial whose design another worker is training: failed, marked ``duplicate_of``, not counted
        as a failure or towards the budget (so two workers never train one design twice)."""
        trial.set_user_attr("duplicate_of", running)
        trial.set_user_attr("fail_reason", "duplicate")
        trial.set_user_attr("fail_message", f"same design as trial {running}, which another worker is training")
        self.study.tell(trial, state=TrialState.FAIL)
        out = Outcome(trial.number, "duplicate", {}, f"same design as running trial {running}",
                      time.perf_counter() - t0)
        self._say(self._line(out))
        return out

    def _fail(self, trial: optuna.Trial, reason: str, message: str, t0: float) -> Outcome:
        seconds = time.perf_counter() - t0
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("fail_message", message[:500])
        trial.set_user_attr("seconds", seconds)
        self.study.tell(trial, state=TrialState.FAIL)
        out = Outcome(trial.number, "fail", {}, f"{reason}: {message}", seconds)
        self._record(trial.number, out, trial)
        self._say(self._line(out))
        return out

    def _record(self, number: int, out: Outcome, trial: optuna.Trial) -> None:
        """Write ``trials/NNNNN.json`` and refresh ``pareto/`` (atomic renames; safe for many workers)."""
        rec = trial_record(number, out.state, out.values, out.reason, out.seconds, out.hypervolume,
                           trial.user_attrs, worker_id())
        write_json(self.files.trial_record(number), rec)
        if out.state == "complete":
            self.refresh_pareto()

    def repair(self) -> Repair:
        """Bring the run directory back in line with the storage after a crash (run at every start).

        The storage is the truth: a finished trial whose ``trials/NNNNN.json`` is missing or cut short
        gets it rewritten from the storage; a complete trial whose ONNX file is missing or does not load
        is named (its figures stay in the storage; ``nasmtl retrain`` rebuilds the model) and kept out
        of ``pareto/``; ``pareto.json`` and ``pareto/`` are rewritten. With a ``shared`` storage only
        the trials whose files live in this directory (user attr ``run_dir``) are checked: other
        workers keep theirs in their own ``--runs`` folders.
        """
        import onnx

        here = str(self.run_dir.resolve())
        rewritten: list[int] = []
        damaged: dict[int, str] = {}
        for t in self.study.get_trials(deepcopy=False):
            state = _RECORD_STATES.get(t.state)
            if state is None or "duplicate_of" in t.user_attrs:
                continue
            if self.shared and t.user_attrs.get("run_dir") != here:
                continue
            path = self.files.trial_record(t.number)
            if read_json(path) is None:
                write_json(path, frozen_record(t, self.names))
                rewritten.append(t.number)
            if state == "complete":
                onnx_path = self.files.trial_onnx(t.number)
                try:
                    onnx.load(str(onnx_path))
                except FileNotFoundError:
                    damaged[t.number] = "missing"
                except Exception as e:
                    damaged[t.number] = f"does not load: {first_line(e, 120, more='')}"
        self._damaged = set(damaged)
        self.refresh_pareto()
        if rewritten:
            self._say(f"rewrote {len(rewritten)} trial record(s) from the storage (missing or cut short): "
                      f"{', '.join(map(str, rewritten))}")
        for number, why in sorted(damaged.items()):
            self._say(f"{RunDir.trial_onnx_name(number)} {why}; the trial's figures are kept in the storage; "
                      f"`nasmtl retrain {self.run_dir} --trial {number}` rebuilds the model")
        return Repair(rewritten, damaged)

    def refresh_pareto(self) -> None:
        """Point ``pareto/`` at the ONNX files of the current Pareto members and list them in ``pareto.json``
        (``"onnx": null`` for a member whose file is missing or damaged)."""
        members = pareto_trials(self.study.get_trials(deepcopy=False), self.directions)
        files = self.files
        pdir = files.pareto_dir
        pdir.mkdir(exist_ok=True)
        keep = set()
        for t in members:
            src = files.trial_onnx(t.number)
            if not src.exists() or t.number in self._damaged:
                continue
            dst = files.pareto_onnx(t.number)
            keep.add(dst.name)
            if not dst.exists():
                tmp = pdir / f".{src.name}.{os.getpid()}"
                try:
                    os.link(src, tmp)
                except OSError:
                    import shutil

                    shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
        for f in files.pareto_models():
            if f.name not in keep:
                f.unlink(missing_ok=True)
        write_json(files.pareto_file, [
            {"trial": t.number, "objectives": dict(zip(self.names, t.values)), "design": t.user_attrs.get("design"),
             "onnx": files.relative(files.pareto_onnx(t.number)) if files.pareto_onnx(t.number).name in keep
             else None} for t in members])

    def _line(self, out: Outcome) -> str:
        trials = self.study.get_trials(deepcopy=False)
        done = len(trained_completes(trials))
        failed = len(failed_trials(trials))
        total = f"/{self.budget.trials}" if self.budget.trials else ""
        hv = study_hypervolume(trials, self.objectives)
        head = f"trial {out.number:4d} {out.state:9s} done {done}{total} failed {failed} hv {hv:.4g}"
        if out.state in ("complete", "duplicate", "pruned") and out.values:
            body = "  ".join(f"{n} {_fmt(out.values[n])}" for n in self.names if n in out.values)
            steps = self.study.get_trials(deepcopy=False)[out.number].user_attrs.get("steps")
            if steps is not None:
                body += f"  ({steps} steps)"
        else:
            body = out.reason
        return f"{head} | {body} | {out.seconds:.1f}s"


def _set_constraints(trial: optuna.Trial, named: dict[str, float]) -> None:
    """Record bound violations as optuna constraints, by objective name (``Trial.set_constraint``) and in
    the list form older readers such as optuna-dashboard 0.21 show (same values, so feasibility agrees)."""
    for k, v in named.items():
        trial.set_constraint(k, v)
    if named:
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", list(named.values()))


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3g}"

