"""The Python API: the README's example, run for real on a tiny search."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch
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


class _Digits(torch.utils.data.Dataset):
    """One split of the real MultiMNIST images as a map-style dataset: (image tensor, {task: class id})."""

    def __init__(self, split, broken_at: int | None = None) -> None:
        self.split, self.broken_at = split, broken_at

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.split.x[i])
        targets = {k: int(v[i]) for k, v in self.split.y.items()}
        if i == self.broken_at:
            targets.pop("right")
        return x, targets


def test_search_on_torch_datasets(root: Path, tmp_path: Path) -> None:
    from nasmtl.data import load_dataset
    from nasmtl.data.dataset import DataError

    real = load_dataset({"name": "multimnist", "n_train": 120, "n_val": 60, "n_test": 60})
    splits = {s: _Digits(getattr(real, s)) for s in ("train", "val", "test")}
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=2))
    runs = tmp_path / "runs"
    run = nasmtl.run_search(cfg, data=splits, name="ds", runs=runs, final=False)
    assert run.config.data["kind"] == "npz" and (runs / "ds" / "data.npz").is_file()
    assert len(run.pareto()) >= 1
    seen = load_dataset(run.config.data)                                  # what the search trained on
    assert [len(getattr(seen, s)) for s in ("train", "val", "test")] == [120, 60, 60]
    assert (seen.test.x == real.test.x).all() and (seen.val.y["right"] == real.val.y["right"]).all()
    assert seen.task("left").kind == "classification" and seen.task("left").n_outputs == 10
    again = nasmtl.run_search(cfg, data=splits, name="ds", runs=runs, trials=3, final=False)   # resume, same data
    assert len([t for t in again._run.study.get_trials() if t.state.name == "COMPLETE"]) >= 3
    other = dict(splits, test=_Digits(real.val))
    with pytest.raises(DataError, match="was made with other data"):
        nasmtl.run_search(cfg, data=other, name="ds", runs=runs, final=False)
    with pytest.raises(DataError, match=r"data\['train'\]\[7\]: tasks \['left'\], but data\['train'\]\[0\] has"):
        nasmtl.run_search(cfg, data=dict(splits, train=_Digits(real.train, broken_at=7)), name="bad", runs=runs)
    assert not (runs / "bad").exists()                                    # nothing left behind
    with pytest.raises(DataError, match=r"data\[0\]: expected \(input, \{task: target\}\), got list"):
        nasmtl.run_search(cfg, data=[[1, 2, 3]], name="bad", runs=runs)
    with pytest.raises(DataError, match="exactly the keys train, val, test .missing: test"):
        nasmtl.run_search(cfg, data={"train": splits["train"], "val": splits["val"]}, name="bad", runs=runs)
