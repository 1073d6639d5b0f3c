"""Self-describing ONNX files (nasmtl.onnx.metadata): written on export, kept by compaction and quantization."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

import nasmtl
from nasmtl.arch import to_torch
from nasmtl.cli import main
from nasmtl.data import multimnist
from nasmtl.examples import two_branch_cnn
from nasmtl.onnx import compact_onnx, compacted, export_onnx
from nasmtl.onnx.metadata import copy_metadata, describe_metadata, model_metadata, read_metadata, write_metadata
from nasmtl.onnx.policy import apply_policy
from nasmtl.spaces.quant import QuantPolicy

DESIGN = "arch=seq(conv(out=4,k=3));layout=left+right/left|right;quant=fp32,int8_static"
METRICS = {"split": "val", "budget": "300 steps", "values": {"left.accuracy": 0.875, "right.accuracy": 0.5}}
DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def data():
    """A small MultiMNIST."""
    return multimnist(n_train=48, n_val=16, n_test=16)


@pytest.fixture(scope="module")
def model():
    """A narrow two-branch CNN in torch (untrained: the metadata do not depend on the weights)."""
    return to_torch(two_branch_cnn((1, 36, 36), {"left": 10, "right": 10}, width=4), seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, data) -> Path:
    """The model exported with its metadata."""
    path = tmp_path_factory.mktemp("meta") / "m.onnx"
    meta = model_metadata(data, design=DESIGN, policy=QuantPolicy(("fp32", "int8_static")), metrics=METRICS)
    export_onnx(model, (1, 36, 36), path, ["left", "right"], metadata=meta)
    return path


def _check_ours(meta: dict) -> None:
    """The metadata a MultiMNIST model was exported with."""
    assert meta["nasmtl.design"] == DESIGN
    assert meta["nasmtl.quant_policy"] == "fp32,int8_static"
    assert meta["nasmtl.metrics"] == METRICS
    assert meta["nasmtl.version"] == nasmtl.__version__
    left, right = meta["nasmtl.tasks"]
    assert (left["name"], right["name"]) == ("left", "right")
    assert left["kind"] == "classification" and left["n_outputs"] == 10 and left["labels"] == DIGITS
    assert left["output"].startswith("logits over 10 classes")
    assert meta["nasmtl.input"]["shape"] == [1, 36, 36] and meta["nasmtl.input"]["dtype"] == "float32"
    assert meta["nasmtl.input"]["preprocessing"].startswith("pixels scaled to [0, 1]")


def test_exported_metadata_read_back(exported):
    _check_ours(read_metadata(exported))
    custom = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert custom["nasmtl.design"] == DESIGN
    assert json.loads(custom["nasmtl.tasks"])[1]["labels"] == DIGITS
    assert json.loads(custom["nasmtl.metrics"])["values"]["left.accuracy"] == 0.875


def test_export_without_metadata_writes_none(model, tmp_path):
    path = tmp_path / "plain.onnx"
    export_onnx(model, (1, 36, 36), path, ["left", "right"])
    assert read_metadata(path) == {} and len(onnx.load(str(path)).metadata_props) == 0
    assert describe_metadata({}) == []


def test_metadata_survive_compaction(exported, tmp_path):
    small = tmp_path / "small.onnx"
    compact_onnx(exported, small)
    _check_ours(read_metadata(small))
    _check_ours(read_metadata(compacted(exported)))


def test_metadata_survive_quantization(exported, data, tmp_path):
    q = apply_policy(exported, tmp_path / "m.int8.onnx", QuantPolicy.uniform("int8_static", 2), data.train.x[:16])
    assert set(q.applied.values()) == {"int8_static"}
    meta = read_metadata(q.path)
    _check_ours(meta)
    custom = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert custom["nasmtl.quant_policy"] == "fp32,int8_static"


def test_copy_metadata_restores_dropped_entries(exported, tmp_path):
    bare = onnx.load(str(exported))
    bare.ClearField("metadata_props")
    target = tmp_path / "bare.onnx"
    onnx.save_model(bare, str(target))
    assert copy_metadata(exported, target) == len(read_metadata(exported))
    _check_ours(read_metadata(target))


def test_write_metadata_values_and_other_keys(exported, tmp_path):
    path = tmp_path / "w.onnx"
    path.write_bytes(exported.read_bytes())
    write_metadata(path, {"other": "theirs", "nasmtl.design": "seq(x)", "n": 0.25, "l": [1, "a"], "d": {"k": None}})
    meta = read_metadata(path)
    assert meta["other"] == "theirs" and meta["nasmtl.design"] == "seq(x)"
    assert meta["n"] == 0.25 and meta["l"] == [1, "a"] and meta["d"] == {"k": None}
    assert meta["nasmtl.quant_policy"] == "fp32,int8_static"
    proto = write_metadata(onnx.load(str(path)), {"x": '"quoted"'})
    assert read_metadata(proto)["x"] == '"quoted"'


def _has_preprocessing_record() -> bool:
    """Whether ``MultiTaskDataset`` records how its values were prepared (its ``preprocessing`` field)."""
    from dataclasses import fields

    from nasmtl.data import MultiTaskDataset

    return "preprocessing" in {f.name for f in fields(MultiTaskDataset)}


def test_model_metadata_of_a_data_set_without_known_preprocessing(data):
    from dataclasses import replace

    from nasmtl.data import Task

    blank = {"preprocessing": {}} if _has_preprocessing_record() else {}
    other = replace(data, name="mine", tasks=(Task("tags", "multilabel", 3), Task("age", "regression", 1)), **blank)
    meta = model_metadata(other, metrics={"age.r2": 0.5})
    tags, age = meta["nasmtl.tasks"]
    assert tags["output"].startswith("logits of 3 independent labels") and "labels" not in tags
    assert age["output"].startswith("1 regression value ")
    assert meta["nasmtl.input"]["preprocessing"].startswith("features as loaded from the data set 'mine'")
    assert meta["nasmtl.metrics"] == {"values": {"age.r2": 0.5}}
    assert "nasmtl.design" not in meta and "nasmtl.quant_policy" not in meta


def test_model_metadata_keeps_the_data_sets_transforms(data):
    from dataclasses import replace

    from nasmtl.data import Task

    if not _has_preprocessing_record():
        pytest.skip("this MultiTaskDataset records no preprocessing")
    record = {"inputs": {"standardized": True, "mean": [0.5], "std": [2.0]},
              "targets": {"age": {"standardized": True, "mean": [40.0], "std": [12.0]}}}
    other = replace(data, name="mine", tasks=(Task("age", "regression", 1),), preprocessing=record)
    meta = model_metadata(other)
    (age,) = meta["nasmtl.tasks"]
    assert age["target_transform"] == record["targets"]["age"] and "z-scores of the targets" in age["output"]
    assert meta["nasmtl.input"]["transform"] == record["inputs"]
    assert meta["nasmtl.input"]["preprocessing"].startswith("z-scores: (x - mean) / std")
    lines = describe_metadata(meta)
    assert any(line.startswith("output age: regression") and "target_transform" in line for line in lines)


def test_predict_prints_the_metadata(exported, capsys):
    assert main(["predict", str(exported), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    _check_ours(row["metadata"])
    assert main(["predict", str(exported)]) == 0
    out = capsys.readouterr().out
    assert f"  design: {DESIGN}" in out
    assert "  metrics (split val, budget 300 steps): left.accuracy 0.875, right.accuracy 0.5" in out


def test_show_an_onnx_file(exported, model, tmp_path, capsys):
    assert main(["show", str(exported)]) == 0
    out = capsys.readouterr().out
    assert "inputs input [batch, 1, 36, 36]; outputs left [batch, 10], right [batch, 10]" in out
    assert "  output left: classification, logits over 10 classes" in out and "labels 0, 1, 2" in out
    assert "  input input: (1, 36, 36) float32, pixels scaled to [0, 1]" in out
    assert "  quantization policy: fp32,int8_static" in out
    plain = tmp_path / "plain.onnx"
    export_onnx(model, (1, 36, 36), plain, ["left", "right"])
    assert main(["show", str(plain)]) == 0
    assert "no nasmtl metadata" in capsys.readouterr().out
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert main(["show", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.onnx: not a valid ONNX model" in err
