"""The run directory's layout: ``RunDir`` names every file a real run writes, and no other module spells them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from nasmtl.cli import main
from nasmtl.run.rundir import RunDir
from tests.conftest import ROOT, TINY_RUN

PACKAGE = ROOT / "nasmtl"
LAYOUT_NAMES = ("run.json", "config.json", "pareto.json", "study.journal", "priors.json", "data.npz", "report.html")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A real three-trial search with its final phase (one finalist, the hand CNN) and its report."""
    tmp = tmp_path_factory.mktemp("rundir")
    cfg = tmp / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=ROOT, trials=3) + 'baselines = ["two-branch-cnn"]\n\n'
                   "[final]\nmembers = 1\nsteps = 4\n")
    runs = tmp / "runs"
    assert main(["search", str(cfg), "--name", "r", "--runs", str(runs), "--quiet"]) == 0
    assert main(["report", str(runs / "r")]) == 0
    return RunDir(runs / "r")


def test_every_path_it_names_is_where_the_run_wrote_it(finished_run: RunDir) -> None:
    from nasmtl.config import RunConfig
    from nasmtl.search.final import final_budget, load_final

    d = finished_run
    assert d.is_run() and d.config_file.is_file() and d.journal.is_file() and d.torn_journals() == []
    assert json.loads(d.run_file.read_text())["name"] == "r"
    numbers = d.trial_numbers()
    assert numbers and d.trial_records() == [d.trial_record(n) for n in numbers]
    complete = [n for n in numbers if json.loads(d.trial_record(n).read_text())["state"] == "complete"]
    assert complete and d.trials_with_models() == complete
    for n in complete:
        rec = json.loads(d.trial_record(n).read_text())
        assert rec["onnx"] == RunDir.trial_onnx_name(n) and d.trial_onnx(n).is_file()
        assert d.root / rec["onnx"] == d.trial_onnx(n)
        onnx = d.trial_onnx(n)                    # what the evaluator writes before quantizing (quantized runs)
        assert d.trial_fp32_onnx(n) == onnx.with_name(onnx.stem + ".fp32.onnx")
    members = json.loads(d.pareto_file.read_text())
    assert members and d.pareto_models() == sorted(d.pareto_onnx(m["trial"]) for m in members)
    assert all(d.root / m["onnx"] == d.pareto_onnx(m["trial"]) for m in members)

    tag = final_budget(RunConfig.from_dict(json.loads(d.config_file.read_text()))).tag
    assert d.final_dirs() == [d.final_dir(tag)]
    records = load_final(d.root)[tag]
    assert sorted(r.kind for r in records) == ["baseline", "found"]
    for r in records:
        assert d.final_record(tag, r.name).is_file() and d.final_onnx(tag, r.name).is_file()
        assert r.onnx == RunDir.final_onnx_name(tag, r.name)
        assert r.name == (RunDir.found_name(r.trial) if r.kind == "found" else RunDir.baseline_name("two-branch-cnn"))
    assert RunDir.baseline_of(RunDir.baseline_name("two-branch-cnn")) == "two-branch-cnn"

    assert d.report_html.is_file() and any(d.report_dir.glob("*.png"))
    named = {p.name for p in (d.run_file, d.config_file, d.journal, d.priors_file, d.data_file, d.trials_dir,
                              d.pareto_dir, d.pareto_file, d.final_root, d.report_dir, d.report_html)}
    assert {p.name for p in d.root.iterdir()} <= named


def _py_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_data" not in p.parts)


def test_no_module_but_rundir_spells_the_layout() -> None:
    own = PACKAGE / "run" / "rundir.py"
    spelled = [f"{p.relative_to(ROOT)}: {q}{name}{q}" for p in _py_files() if p != own
               for name in LAYOUT_NAMES for q in ('"', "'") if f"{q}{name}{q}" in p.read_text(encoding="utf-8")]
    assert spelled == []


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_engine_and_the_priors_sit_below_the_run_lifecycle() -> None:
    """``nasmtl.search`` never imports ``nasmtl.priors``; both use only the layout (a leaf) of ``nasmtl.run``."""
    for path in _py_files():
        mods = _imports(path)
        where = path.relative_to(PACKAGE).parts[0]
        if where == "search":
            assert not any(m.startswith("nasmtl.priors") for m in mods), path
        if where in ("search", "priors"):
            assert {m for m in mods if m.startswith("nasmtl.run")} <= {"nasmtl.run.rundir"}, path
    assert not any(m.startswith("nasmtl") for m in _imports(PACKAGE / "run" / "rundir.py"))
