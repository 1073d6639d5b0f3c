"""optuna-dashboard reads a run's storage (journal file and SQLite): studies, trials, user attributes, constraints."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from nasmtl.config import parse_config
from nasmtl.search.evaluate import TrialFailed
from tests.conftest import FakeEvaluator

dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the dev extra")

CONFIG = {
    "data": {"name": "multimnist", "n_train": 40, "n_val": 20, "n_test": 20},
    "space": {"cell": "search_spaces/nb201.toml"},
    "objectives": [{"name": "left.accuracy", "direction": "maximize", "bound": 0.3, "ref": 0.0},
                   {"name": "macs", "direction": "minimize", "ref": 1001.0}],
    "train": {"epochs": 1},
    "search": {"sampler": "evolution", "trials": 6, "population": 3, "bank": False,
               "fidelity": {"enabled": False}},
}


def _get(app: Any, path: str) -> dict[str, Any]:
    env: dict[str, Any] = {"PATH_INFO": path, "wsgi.errors": io.StringIO()}
    setup_testing_defaults(env)
    status: list[str] = []
    body = b"".join(app(env, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:300])
    return json.loads(body)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_dashboard_shows_trials_attrs_and_constraints(root: Path, tmp_path: Path, kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import nasmtl.search.evaluate as ev
    from nasmtl.run.build import run_engine
    from nasmtl.run.lifecycle import start_run
    from nasmtl.search.storage import open_storage

    def fail_some(key: str) -> BaseException | None:
        return TrialFailed("nan", "training diverged at step 3") if key.endswith("3") else None

    monkeypatch.setattr(ev, "build_evaluator", lambda cfg, space, data=None: FakeEvaluator(space, fail=fail_some))
    url = None if kind == "journal" else f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = start_run(parse_config(CONFIG, "<test>", str(root)), "dash", url, tmp_path)
    run_engine(run, progress=None)
    app = dashboard.wsgi(open_storage(url, run.dir))
    studies = _get(app, "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["dash"]
    study = _get(app, f"/api/studies/{studies[0]['study_id']}")
    trials = study["trials"]
    assert len(trials) >= 6
    assert run.study.metric_names == ["left.accuracy", "macs"]           # the dashboard's objective labels
    done = [t for t in trials if t["state"] == "Complete"]
    keys = {a["key"] for a in done[0]["user_attrs"]}
    assert {"design", "choices", "value:left.accuracy", "value:macs", "hypervolume"} <= keys
    assert all(len(t["constraints"]) == 1 for t in done)                 # the bound on left.accuracy
    for t in done:                                                       # evolution's decisions as params
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        params = {p["name"]: p["param_external_value"] for p in t["params"]}
        assert params and params == json.loads(attrs["choices"])
    assert any(t["constraints"][0] > 0 for t in done) == any(t["values"][0] < 0.3 for t in done)
    failed = [t for t in trials if t["state"] == "Fail"]
    if failed:
        reasons = {a["key"]: a["value"] for a in failed[0]["user_attrs"]}
        assert reasons["fail_reason"] == "nan" and "diverged" in reasons["fail_message"]
