"""Files cut short by a crash: the storage is the truth, records come back from it, damage is named."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nasmtl.cli import main
from nasmtl.files import read_json, write_json
from nasmtl.run.rundir import RunDir
from nasmtl.search.storage import open_storage, repair_journal_tail
from tests.conftest import ROOT, TINY_RUN


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real three-trial run (no final phase), made once for the module."""
    tmp = tmp_path_factory.mktemp("torn")
    cfg = tmp / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=ROOT, trials=3))
    assert main(["search", str(cfg), "--name", "t", "--runs", str(tmp / "runs"), "--no-final", "--quiet"]) == 0
    return tmp / "runs" / "t"


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "runs" / "t"
    shutil.copytree(run, dst)
    return dst


def _resume(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["search", "--name", run.name, "--runs", str(run.parent), "--no-final"])
    return rc, capsys.readouterr().err


def _completes(run: Path) -> dict[int, tuple[float, ...]]:
    study = optuna.load_study(study_name=run.name, storage=open_storage(None, run))
    return {t.number: tuple(t.values) for t in study.get_trials()
            if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs}


def test_resume_rewrites_cut_records_and_names_a_damaged_model(finished_run: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(finished_run, tmp_path)
    done = _completes(run)
    assert len(done) == 3
    first, second, third = sorted(done)
    originals = {n: json.loads((run / "trials" / f"{n:05d}.json").read_text()) for n in (first, second)}
    cut = run / "trials" / f"{first:05d}.json"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (run / "trials" / f"{second:05d}.json").unlink()
    (run / "pareto.json").write_text('[{"trial": ')
    model = run / "trials" / f"{third:05d}.onnx"
    model.write_bytes(model.read_bytes()[:100])
    with open(RunDir(run).journal, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 9, "us')      # an append cut short

    rc, err = _resume(run, capsys)
    assert rc == 0, err
    assert _completes(run) == done                                              # no finished trial lost
    for n, rec in originals.items():
        assert json.loads((run / "trials" / f"{n:05d}.json").read_text()) == rec
    assert f"rewrote 2 trial record(s) from the storage (missing or cut short): {first}, {second}" in err
    assert f"trials/{third:05d}.onnx does not load" in err and f"--trial {third}" in err
    assert "last record was cut short by a crash" in err
    torn = RunDir(run).torn_journals()
    assert len(torn) == 1 and torn[0].read_bytes().endswith(b'"us')
    assert RunDir(run).journal.read_bytes().endswith(b"\n")
    pareto = read_json(run / "pareto.json")
    assert pareto is not None and {m["trial"]: m["onnx"] for m in pareto}.get(third, "absent") in (None, "absent")
    assert not (run / "pareto" / model.name).exists()


def test_a_damaged_journal_line_is_named_with_how_to_keep_the_rest(finished_run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(finished_run, tmp_path)
    journal = RunDir(run).journal
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[4] = b"\x00\x00garbage\n"
    journal.write_bytes(b"".join(lines))
    rc, err = _resume(run, capsys)
    assert rc == 2
    assert err.strip().splitlines() == [
        f"nasmtl search: error: journal file {journal}: line 5 is damaged (not a journal record); "
        f"the trials before it can be kept: head -n 4 {journal} > kept.journal"]


def test_a_whole_journal_is_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    journal.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    assert repair_journal_tail(journal) == 0 and journal.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    journal.write_bytes(b'{"a": 1}\n{"b"')
    assert repair_journal_tail(journal) == 4 and journal.read_bytes() == b'{"a": 1}\n'
    assert repair_journal_tail(tmp_path / "missing") == 0


def test_write_json_is_whole_or_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rec.json"
    write_json(path, {"v": 1})
    import os

    def crash(*a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json(path, {"v": 2})
    assert read_json(path) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["rec.json"]


def test_a_start_killed_before_its_config_was_stored_starts_again(root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    optuna.create_study(study_name="h", storage=open_storage(None, runs / "h"), directions=["maximize", "minimize"])
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=1))
    assert main(["search", str(cfg), "--name", "h", "--runs", str(runs), "--no-final", "--quiet"]) == 0, \
        capsys.readouterr().err
    assert len(_completes(runs / "h")) == 1
