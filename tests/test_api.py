"""The Python API: the README's example, run for real on a tiny search."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

import nasmtl
from nasmtl.config import ConfigError
from tests.conftest import TINY_RUN


def test_search_pareto_retrain_export_load(root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=3) + "\n[final]\nmembers = 1\nsteps = 4\n")
    run = nasmtl.run_search(cfg, name="api", runs=tmp_path / "runs")
    members = run.pareto()
    assert members and all(m.design.startswith("seq(") for m in members)
    assert {r.kind for r in run.final()} == {"found", "baseline"}       # the final phase ran
    rec = run.retrain(members[0].trial, steps=3)
    assert rec.steps == 3 and rec.trial == members[0].trial and "left.accuracy" in rec.test
    out = run.export(rec, tmp_path / "m.onnx")
    assert [o.name for o in ort.InferenceSession(str(out)).get_outputs()] == ["left", "right"]
    again = nasmtl.load_run(tmp_path / "runs" / "api")
    assert [m.trial for m in again.pareto()] == [m.trial for m in members]
    with pytest.raises(ConfigError, match="no completed trial 99"):
        again.retrain(99)
    with pytest.raises(ConfigError, match="not a run directory"):
        nasmtl.load_run(tmp_path)
    with pytest.raises(ConfigError, match="--name '../x'"):
        nasmtl.run_search(cfg, name="../x", runs=tmp_path / "runs")
