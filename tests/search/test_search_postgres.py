"""Three worker processes on one study in a real PostgreSQL server: every trial completed exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import TINY_RUN
from tests.pgserver import NoPostgres, postgres_server
from tests.search.test_search_resume import env

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres():
    try:
        with postgres_server() as url:
            yield url
    except NoPostgres as e:
        pytest.skip(str(e))


def test_three_workers_on_postgres(root: Path, tmp_path: Path, postgres: str) -> None:
    from nasmtl.config import load_config
    from nasmtl.run.lifecycle import start_run
    from nasmtl.search.storage import open_storage

    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(TINY_RUN.format(root=root, trials=9).replace('sampler = "evolution"', 'sampler = "random"'))
    start_run(load_config(cfg_path), "pg", postgres, tmp_path / "runs")
    procs = [subprocess.Popen([sys.executable, "-m", "nasmtl.cli", "worker", "pg", "--storage", postgres,
                               "--runs", str(tmp_path / f"w{i}")], env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for i in range(3)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="pg", storage=open_storage(postgres))
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert 9 <= len(done) <= 9 + 2
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    records = {}
    for i in range(3):
        for f in (tmp_path / f"w{i}" / "pg" / "trials").glob("*.json"):
            rec = json.loads(f.read_text())
            assert rec["trial"] not in records, f"trial {rec['trial']} recorded by two workers"
            records[rec["trial"]] = (i, rec)
    assert {t.number for t in done} == {n for n, (_, r) in records.items() if r["state"] == "complete"}
    assert len({t.user_attrs["worker"] for t in done}) >= 2
    for t in done:
        i, rec = records[t.number]
        assert rec["objectives"]["params"] == t.values[1]
        assert (tmp_path / f"w{i}" / "pg" / "trials" / f"{t.number:05d}.onnx").is_file()
