"""Real searches through the CLI: kill -9 loses no completed trial and ``--name`` resumes; report and export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nasmtl.cli import main
from nasmtl.search.storage import open_storage
from tests.conftest import TINY_RUN


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return e


def completed(run_dir: Path, name: str) -> dict[int, tuple[float, ...]]:
    study = optuna.load_study(study_name=name, storage=open_storage(None, run_dir))
    return {t.number: tuple(t.values) for t in study.get_trials() if t.state == TrialState.COMPLETE}


def test_kill_9_loses_nothing_and_resume_finishes(root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=6))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "nasmtl.cli", "search", str(cfg), "--name", "k", "--runs", str(runs)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    records = runs / "k" / "trials"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = completed(runs / "k", "k")
    assert len(before) >= 2
    resumed = subprocess.run([sys.executable, "-m", "nasmtl.cli", "search", "--name", "k", "--runs", str(runs)],
                             env=env(), capture_output=True, text=True, cwd=tmp_path, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = completed(runs / "k", "k")
    assert all(after.get(n) == v for n, v in before.items())
    study = optuna.load_study(study_name="k", storage=open_storage(None, runs / "k"))
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    dead = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs.get("fail_reason", "").startswith("worker died") for t in dead)
    assert len([t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]) == 6
    assert json.loads((runs / "k" / "config.json").read_text())["search"]["trials"] == 6


def test_report_and_export_of_a_real_run(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=3))
    runs = tmp_path / "runs"
    assert main(["search", str(cfg), "--name", "r", "--runs", str(runs)]) == 0
    capsys.readouterr()
    assert main(["report", str(runs / "r"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["completed"] == 3 and rep["failed"] == 0 and rep["hypervolume"] > 0
    assert rep["pareto"] and set(rep["pareto"][0]["objectives"]) == {"left.accuracy", "params"}
    assert all(m["design"].startswith("seq(") for m in rep["pareto"])
    assert main(["report", str(runs / "r")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and rep["pareto"][0]["design"] in out
    page = (runs / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src=\"report/" not in page   # pareto, final, hypervolume
    assert "Final models (trained from scratch" in page
    assert (runs / "r" / "report" / "hypervolume.png").stat().st_size > 1000
    k = rep["pareto"][0]["trial"]
    out_path = tmp_path / "m.onnx"
    assert main(["export", str(runs / "r"), "--trial", str(k), "-o", str(out_path)]) == 0
    from nasmtl.onnx import graph_stats, read_metadata

    assert graph_stats(out_path).params == rep["pareto"][0]["objectives"]["params"]
    assert graph_stats(out_path).bytes == graph_stats(runs / "r" / "trials" / f"{k:05d}.onnx").bytes
    meta = read_metadata(out_path)
    assert meta["nasmtl.design"] == rep["pareto"][0]["design"]
    assert [t["name"] for t in meta["nasmtl.tasks"]] == ["left", "right"] and meta["nasmtl.metrics"]["split"] == "val"
    # a quantized trial's fp32 companion beside the models must not break the listing of trials
    (runs / "r" / "trials" / f"{k:05d}.fp32.onnx").write_bytes(b"")
    capsys.readouterr()
    assert main(["export", str(runs / "r"), "--trial", "99", "-o", str(out_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trained model of trial 99 (trials with models: " in err[0] and str(k) in err[0]
