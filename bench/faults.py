"""Fault bench: a real tiny search killed with SIGKILL again and again, resumed each time, then checked.

    python bench/faults.py [--kills 20] [--modes single,journal2,postgres3] [--seed 0] [--max-wait 20]

Each mode runs a real search (MultiMNIST, 120 training images, the small CNN grammar, one epoch a
trial, no final phase) and, ``--kills`` times, waits a random 0.5 s to ``--max-wait`` s (20: a restart takes 5-10 s to reach its first trial) and kills a
process with SIGKILL, wherever it is (starting up, training, exporting, writing a record, appending
to the journal), then starts it again with the same command. After the last kill one more process
finishes a budget of what was completed plus three trials. Then it compares the two places a trial
lives, the optuna storage and ``runs/NAME/trials/``:

- resumed: restarts that came up and were running (or had finished) when they were next killed;
- lost: trials complete in one place and not the other, or complete without their ONNX file;
- duplicated: designs trained to completion twice (the engine trains a design once);
- left running: trials still RUNNING in the storage after the last process ended;
- Pareto agrees: ``pareto.json`` and ``nasmtl report --json`` list the storage's Pareto front.

Modes: ``single`` (one process on the run's own journal file), ``journal2`` (two processes on one
journal-file run; each kill hits one of them), ``postgres3`` (three ``nasmtl worker`` processes on one
study in a real PostgreSQL server started here; skipped with its reason where PostgreSQL is not
installed). The baseline, run first in the same process: the same search, uninterrupted, for six
trials; the ratio printed is seconds per completed trial under kills / uninterrupted. Aim: every
kill resumed, 0 lost, 0 duplicated, 0 left running, Pareto agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import TINY_RUN  # noqa: E402

CONFIG = TINY_RUN.format(root=ROOT, trials=1000).replace('sampler = "evolution"', 'sampler = "random"')
"""The test suite's tiny search (MultiMNIST, 120 training images, the small CNN grammar), sampled at random."""
NAME = "faults"


@dataclass
class Outcome:
    """One mode's figures."""

    mode: str
    kills: int = 0
    resumed: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    left_running: int = 0
    pareto_agrees: bool = False
    seconds: float = 0.0
    kills_mid_trial: int = 0
    kills_mid_record: int = 0
    torn_journal_tails: int = 0
    problems: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(ROOT)
    return e


def _nasmtl(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasmtl.cli", *args]


class Fleet:
    """The processes of one mode, each restartable with its own command."""

    def __init__(self, commands: list[list[str]], cwd: Path, log: Path) -> None:
        self.commands, self.cwd, self.log = commands, cwd, log
        self.procs: list[subprocess.Popen | None] = [None] * len(commands)
        self.starts = 0

    def start(self, i: int) -> None:
        out = open(self.log, "ab")
        self.procs[i] = subprocess.Popen(self.commands[i], cwd=self.cwd, env=_env(), stdout=out, stderr=out)
        self.starts += 1

    def kill(self, i: int) -> int | None:
        """SIGKILL process ``i``; returns its exit status if it had already ended by itself, else None."""
        p = self.procs[i]
        assert p is not None
        ended = p.poll()
        if ended is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        return ended

    def wait_all(self, timeout: float) -> list[int]:
        return [p.wait(timeout=timeout) if p is not None else 0 for p in self.procs]


def _study(storage_url: str | None, run_dir: Path):
    import optuna

    from nasmtl.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=NAME, storage=open_storage(storage_url, run_dir))


def _snapshot_after_kill(out: Outcome, run_dir: Path, storage_url: str | None, pid: int) -> None:
    """Where the kill of process ``pid`` landed, as far as the files tell: one of its trials running, a record
    half-written, a torn journal."""
    from optuna.trial import TrialState

    if any(p.name.endswith(".tmp") for p in (run_dir / "trials").glob(".*")) or \
            any(p.name.endswith(".tmp") for p in run_dir.glob(".*")):
        out.kills_mid_record += 1
    journal = run_dir / "study.journal"
    if storage_url is None and journal.is_file() and journal.stat().st_size:
        with open(journal, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                out.torn_journal_tails += 1
    try:
        trials = _study(storage_url, run_dir).get_trials(deepcopy=False)
    except Exception:
        return
    if any(t.state == TrialState.RUNNING and str(t.user_attrs.get("worker", "")).endswith(f":{pid}") for t in trials):
        out.kills_mid_trial += 1


def _check(out: Outcome, run_dir: Path, storage_url: str | None, cwd: Path) -> None:
    """Compare the storage with the run directory; fill lost / duplicated / left running / Pareto agrees."""
    from optuna.trial import TrialState

    from nasmtl.search.engine import pareto_trials

    trials = _study(storage_url, run_dir).get_trials(deepcopy=False)
    done = {t.number: t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs}
    out.completed = len(done)
    out.left_running = sum(t.state == TrialState.RUNNING for t in trials)
    records = {}
    for f in (run_dir / "trials").glob("*.json"):
        try:
            rec = json.loads(f.read_text())
        except ValueError:
            out.problems.append(f"{f.name} does not read as JSON")
            continue
        if rec.get("state") == "complete":
            records[rec["trial"]] = rec
    missing = sorted(set(done) - set(records))
    extra = sorted(set(records) - set(done))
    no_onnx = sorted(n for n in done if not (run_dir / "trials" / f"{n:05d}.onnx").is_file())
    out.lost = len(missing) + len(extra) + len(no_onnx)
    for what, nums in (("complete in the storage, no record", missing), ("record says complete, storage does not", extra),
                       ("complete without its ONNX file", no_onnx)):
        if nums:
            out.problems.append(f"{what}: {nums}")
    designs: dict[str, int] = {}
    for t in done.values():
        designs[t.user_attrs.get("design")] = designs.get(t.user_attrs.get("design"), 0) + 1
    out.duplicated = sum(c - 1 for c in designs.values() if c > 1)
    directions = ["maximize", "minimize"]
    front = {t.number for t in pareto_trials(trials, directions)}
    listed = {m["trial"] for m in json.loads((run_dir / "pareto.json").read_text())}
    rep = subprocess.run(_nasmtl("report", str(run_dir), "--json"), cwd=cwd, env=_env(), capture_output=True, text=True)
    reported = {m["trial"] for m in json.loads(rep.stdout)["pareto"]} if rep.returncode == 0 else None
    out.pareto_agrees = front == listed == reported
    if not out.pareto_agrees:
        out.problems.append(f"Pareto: storage {sorted(front)}, pareto.json {sorted(listed)}, report {reported}")


def run_mode(mode: str, kills: int, rng: random.Random, max_wait: float, work: Path,
             storage_url: str | None = None) -> Outcome:
    """Kill and resume one mode's processes ``kills`` times, finish, then check."""
    out = Outcome(mode)
    base = work / mode
    base.mkdir(parents=True)
    cfg = base / "run.toml"
    cfg.write_text(CONFIG)
    runs = base / "runs"
    run_dir = runs / NAME
    log = base / "log.txt"
    t0 = time.perf_counter()
    if mode == "postgres3":
        from nasmtl.config import load_config
        from nasmtl.run.lifecycle import start_run

        start_run(load_config(cfg), NAME, storage_url, runs)        # the study, its config; no trial yet
        worker = _nasmtl("worker", NAME, "--storage", storage_url, "--runs", str(runs))
        fleet = Fleet([worker] * 3, base, log)
    else:
        # The same command starts the run and resumes it (a config equal to the stored one resumes).
        cmd = _nasmtl("search", str(cfg), "--name", NAME, "--runs", str(runs), "--no-final", "--quiet")
        fleet = Fleet([cmd] * (2 if mode == "journal2" else 1), base, log)
        fleet.start(0)
        if mode == "journal2":          # the second process joins once the run exists (two creators would race)
            while not (run_dir / "run.json").is_file() and fleet.procs[0].poll() is None:
                time.sleep(0.1)
    for i in range(len(fleet.commands)):
        if fleet.procs[i] is None:
            fleet.start(i)
    for _ in range(kills):
        time.sleep(rng.uniform(0.5, max_wait))
        victim = rng.randrange(len(fleet.commands))
        pid = fleet.procs[victim].pid
        ended = fleet.kill(victim)
        out.kills += 1
        if ended is None or ended == 0:
            out.resumed += 1
        else:
            out.problems.append(f"a restart of process {victim} ended by itself with status {ended}")
        _snapshot_after_kill(out, run_dir, storage_url, pid)
        fleet.start(victim)
    for i in range(len(fleet.commands)):
        fleet.kill(i)
    done_now = len([t for t in _study(storage_url, run_dir).get_trials(deepcopy=False)
                    if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs])
    finish = (_nasmtl("worker", NAME, "--storage", storage_url, "--runs", str(runs), "--trials", str(done_now + 3))
              if storage_url else
              _nasmtl("search", str(cfg), "--name", NAME, "--runs", str(runs), "--no-final", "--quiet", "--trials",
                      str(done_now + 3)))
    last = subprocess.run(finish, cwd=base, env=_env(), capture_output=True, text=True, timeout=900)
    if last.returncode != 0:
        out.problems.append(f"the finishing run failed: {last.stderr.strip()[-500:]}")
    out.seconds = time.perf_counter() - t0
    _check(out, run_dir, storage_url, base)
    return out


def baseline(work: Path, trials: int = 6) -> float:
    """Seconds per completed trial of the same search, uninterrupted (start-up included)."""
    base = work / "baseline"
    base.mkdir(parents=True)
    cfg = base / "run.toml"
    cfg.write_text(CONFIG)
    t0 = time.perf_counter()
    done = subprocess.run(_nasmtl("search", str(cfg), "--name", NAME, "--runs", str(base / "runs"), "--no-final",
                                  "--quiet", "--trials", str(trials)), cwd=base, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"baseline search failed: {done.stderr.strip()[-800:]}")
    return (time.perf_counter() - t0) / trials


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--modes", default="single,journal2,postgres3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wait", type=float, default=20.0, help="longest wait between kills, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="nasmtl-faults-"))
    try:
        per_trial = baseline(work)
        print(f"baseline: uninterrupted search, {per_trial:.2f} s per completed trial")
        results = []
        for mode in args.modes.split(","):
            if mode == "postgres3":
                from tests.pgserver import NoPostgres, postgres_server

                try:
                    with postgres_server() as url:
                        results.append(run_mode(mode, args.kills, rng, args.max_wait, work, url))
                except NoPostgres as e:
                    print(f"postgres3: skipped ({e})")
                    continue
            elif mode in ("single", "journal2"):
                results.append(run_mode(mode, args.kills, rng, args.max_wait, work))
            else:
                raise SystemExit(f"unknown mode {mode!r} (single, journal2, postgres3)")
            r = results[-1]
            ratio = (r.seconds / r.completed) / per_trial if r.completed else float("inf")
            ok = (r.resumed == r.kills and r.lost == 0 and r.duplicated == 0 and r.left_running == 0
                  and r.pareto_agrees)
            print(f"{r.mode}: kills {r.kills}, resumed {r.resumed}/{r.kills}, trials completed {r.completed}, "
                  f"lost {r.lost}, duplicated {r.duplicated}, left running {r.left_running}, "
                  f"Pareto agrees {'yes' if r.pareto_agrees else 'no'}; kills that landed mid-trial "
                  f"{r.kills_mid_trial}, mid-record-write {r.kills_mid_record}, torn journal tails "
                  f"{r.torn_journal_tails}; {r.seconds:.0f} s, {ratio:.2f}x the uninterrupted seconds per trial; "
                  f"aim {'met' if ok else 'NOT met'}")
            for p in r.problems:
                print(f"  {r.mode}: {p}")
        return 0 if results and all(r.resumed == r.kills and r.lost == 0 and r.duplicated == 0 and
                                    r.left_running == 0 and r.pareto_agrees for r in results) else 1
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
