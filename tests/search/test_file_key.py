"""Quantization policies that build the same file are one design: the engine trains it once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasmtl.config import parse_config
from nasmtl.spaces.joint import Design
from nasmtl.spaces.quant import QuantPolicy

ROOT = Path(__file__).resolve().parents[2]
# a convolution stem and two stages of convolutions; the task heads (dense layers) join the last group
ARCH = ("seq(seq(conv(out=8,k=3),batchnorm,relu),"
        "seq(seq(conv(out=8,k=3),batchnorm,relu),maxpool(k=2,stride=2)),"
        "seq(seq(conv(out=8,k=3),batchnorm,relu),maxpool(k=2,stride=2)))")


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _cfg(start: list[str], trials: int) -> object:
    return parse_config({
        "data": {"name": "multimnist", "n_train": 256, "n_val": 96, "n_test": 32},
        "space": {"grammar": "grammars/cnn.lark", "arch": ARCH, "layout": "shared",
                  "quant": "search_spaces/quant.toml"},
        "objectives": [{"name": "left.accuracy"}, {"name": "right.accuracy"},
                       {"name": "bytes", "direction": "minimize", "ref": 1e6}],
        "train": {"steps": 6, "batch_size": 32},
        "search": {"sampler": "random", "trials": trials, "latency_runs": 2, "seed": 3, "start": start}},
        "<test>", str(ROOT))


def _design(space: object, *precisions: str) -> Design:
    return Design(space.fixed["arch"], space.fixed["layout"], QuantPolicy(precisions))


def test_synonym_policies_share_a_key_and_build_the_same_file(tmp_path: Path) -> None:
    from nasmtl.arch import to_torch
    from nasmtl.onnx import export_onnx
    from nasmtl.onnx.policy import apply_policy
    from nasmtl.search.evaluate import build_evaluator, load_data, load_space

    cfg = _cfg([], 1)
    data = load_data(cfg)
    space = load_space(cfg, data)
    ev = build_evaluator(cfg, space, data)
    a = _design(space, "int8_static", "fp32", "int4_weight")
    same = [_design(space, "int4_int8", "fp32", "int4_weight"),      # int4 applies to MatMul only
            _design(space, "int8_static", "int4_weight", "int4_weight")]  # so a conv stage stays fp32
    other = [_design(space, "fp32", "fp32", "int4_weight"), _design(space, "int8_static", "fp32", "int4_int8")]
    key = ev.effective_key(a)
    assert key is not None and all(ev.effective_key(d) == key for d in same)
    assert all(ev.effective_key(d) != key for d in other)

    fp32 = tmp_path / "m.onnx"
    export_onnx(to_torch(ev.build(a), seed=0), tuple(data.input_shape), fp32, [t.name for t in data.tasks])
    calib = data.train.x[:16]
    files = [apply_policy(fp32, tmp_path / f"q{i}.onnx", d.quant, calib, calibration_samples=16).path.read_bytes()
             for i, d in enumerate([a, *same, other[0]])]
    assert files[0] == files[1] == files[2] and files[0] != files[3]


def test_the_engine_trains_a_synonym_once(tmp_path: Path) -> None:
    from nasmtl.run.build import run_engine
    from nasmtl.run.lifecycle import start_run
    from nasmtl.search.evaluate import load_space

    space = load_space(_cfg([], 1))
    first, synonym = (space.encode(_design(space, p, "fp32", "int4_weight")) for p in ("int8_static", "int4_int8"))
    run = start_run(_cfg([first, synonym], 2), "syn", runs_root=tmp_path)
    summary = run_engine(run, progress=None)
    trials = run.study.get_trials()
    assert summary.completed == 2 and summary.duplicates == 1
    assert trials[1].user_attrs["design"] == synonym and trials[1].user_attrs["duplicate_of"] == 0
    assert trials[1].values == trials[0].values
    assert trials[0].user_attrs["file_key"] == trials[1].user_attrs["file_key"]
    assert not (tmp_path / "syn" / "trials" / "00001.onnx").exists()
    assert trials[2].user_attrs["file_key"] != trials[0].user_attrs["file_key"]
