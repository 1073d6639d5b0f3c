"""Quantization policies: the QuantSpace protocol, layer groups, applying policies and measuring them in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from nasmtl.arch import to_torch
from nasmtl.arch.compose import compose
from nasmtl.arch.ir import Arch, ArchBuilder
from nasmtl.data import MultiTaskDataset, multimnist
from nasmtl.onnx import export_onnx, graph_stats, quantizable_nodes, run_onnx, session
from nasmtl.onnx.graph import OnnxError
from nasmtl.onnx.policy import (
    apply_policy,
    baselines,
    evaluate_onnx,
    layer_groups,
    mean_primary,
    measure_onnx,
    measure_policy,
    node_policy,
)
from nasmtl.onnx.quantize import PRECISIONS as ONNX_PRECISIONS
from nasmtl.onnx.quantize import quantize
from nasmtl.spaces import DecisionSpace, SearchSpace, SpaceError
from nasmtl.spaces.quant import BASIC_PRECISIONS, PRECISIONS, QuantPolicy, QuantSpace
from nasmtl.train import Budget, TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]


def _stage(input_shape: tuple[int, ...], layers: list[tuple[str, dict]]) -> Arch:
    b = ArchBuilder(input_shape)
    b.output("out", b.chain(b.input, layers))
    return b.build()


@pytest.fixture(scope="module")
def data() -> MultiTaskDataset:
    return multimnist(seed=0, n_train=384, n_val=192, n_test=8)


@pytest.fixture(scope="module")
def fp32(data: MultiTaskDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-stage model (shared conv stage 0, per-task dense stage 1) trained a few steps, as ONNX."""
    torch.set_num_threads(1)
    s0 = _stage(data.input_shape, [("conv", {"out": 8, "k": 3}), ("relu", {}), ("maxpool", {"k": 2, "stride": 2}),
                                   ("maxpool", {"k": 2, "stride": 2})])
    s1 = _stage(s0.shape(s0.outputs["out"]), [("flatten", {}), ("linear", {"out": 64}), ("relu", {})])
    heads = {t.name: t.n_outputs for t in data.tasks}
    arch = compose([s0, s1], [[["left", "right"]], [["left"], ["right"]]], heads)
    model = to_torch(arch, seed=0)
    train(model, data, TrainConfig(budget=Budget(steps=25), batch_size=64, lr=3e-3, seed=0))
    model.eval()
    path = tmp_path_factory.mktemp("quant") / "fp32.onnx"
    export_onnx(model, data.input_shape, path, list(heads))
    return path


def _calib(data: MultiTaskDataset) -> np.ndarray:
    return data.train.x[:32]


def _fed_by_dq(proto: onnx.ModelProto, name: str) -> bool:
    prod = {o: n for n in proto.graph.node for o in n.output}
    node = next(n for n in proto.graph.node if n.name == name)
    return any(i in prod and prod[i].op_type == "DequantizeLinear" for i in node.input[:2])


# ---- layer groups ------------------------------------------------------------------------------


def test_layer_groups_follow_stages_and_heads_join_the_last(fp32: Path) -> None:
    groups = layer_groups(fp32, 2)
    ops = dict(quantizable_nodes(fp32))
    assert set(groups) == set(ops)
    assert [n for n, g in groups.items() if g == 0] == [n for n in ops if "/s0_" in n]
    assert all(ops[n] == "Conv" for n, g in groups.items() if g == 0)
    heads = [n for n in groups if "_head/" in n]
    assert len(heads) == 2 and all(groups[h] == 1 for h in heads)
    assert sum(1 for n in groups if "/s1_" in n) == 2
    assert set(layer_groups(fp32, 1).values()) == {0}
    three = layer_groups(fp32, 3)
    assert all(three[h] == 2 for h in heads)
    assert all(three[n] == 1 for n in groups if "/s1_" in n)
    with pytest.raises(ValueError, match="n_groups"):
        layer_groups(fp32, 0)


class Plain(nn.Module):
    """Two linear layers with no stage names."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": self.b(torch.relu(self.a(x)))}


def test_model_without_stage_names_is_one_group(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    export_onnx(Plain(), (8,), path)
    groups = layer_groups(path, 3)
    assert len(groups) == 2 and set(groups.values()) == {0}
    assert set(node_policy(path, QuantPolicy(("int8_dynamic", "fp32", "fp32"))).values()) == {"int8_dynamic"}


# ---- applying policies -------------------------------------------------------------------------


def test_each_precision_changes_bytes_and_runs(fp32: Path, data: MultiTaskDataset, tmp_path: Path) -> None:
    base = graph_stats(fp32).file_bytes
    x = data.val.x[:5]
    ref = run_onnx(fp32, x)
    ops = dict(quantizable_nodes(fp32))
    sizes = {}
    for prec in ("int8_static", "int8_dynamic", "int4_weight"):
        q = apply_policy(fp32, tmp_path / f"{prec}.onnx", QuantPolicy.uniform(prec, 2), _calib(data))
        assert q.bytes == q.path.stat().st_size == graph_stats(q.path).file_bytes
        out = run_onnx(q.path, x)
        assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in ref.items()}
        assert all(np.isfinite(v).all() for v in out.values())
        sizes[prec] = q.bytes
        if prec == "int4_weight":
            assert {n for n, op in ops.items() if op == "Conv"} == set(q.skipped)
            assert all("Conv" in r for r in q.skipped.values())
            assert all(q.applied[n] == "int4_weight" for n, op in ops.items() if op != "Conv")
        else:
            assert not q.skipped and set(q.applied.values()) == {prec}
    assert sizes["int8_static"] < 0.4 * base
    assert sizes["int8_dynamic"] < 0.4 * base
    assert sizes["int4_weight"] < 0.3 * base
    fp = apply_policy(fp32, tmp_path / "fp32copy.onnx", QuantPolicy.uniform("fp32", 2), _calib(data))
    assert fp.bytes == base and set(fp.applied.values()) == {"fp32"}


def test_mixed_policy_quantizes_exactly_the_named_groups(fp32: Path, data: MultiTaskDataset, tmp_path: Path) -> None:
    groups = layer_groups(fp32, 2)
    g0 = {n for n, g in groups.items() if g == 0}
    g1 = {n for n, g in groups.items() if g == 1}
    q = apply_policy(fp32, tmp_path / "a.onnx", QuantPolicy(("int8_static", "fp32")), _calib(data))
    assert q.groups == groups and not q.skipped
    assert {n for n, p in q.applied.items() if p == "int8_static"} == g0
    assert {n for n, p in q.applied.items() if p == "fp32"} == g1
    proto = onnx.load(str(q.path))
    assert all(_fed_by_dq(proto, n) for n in g0)
    assert not any(_fed_by_dq(proto, n) for n in g1 if n in {m.name for m in proto.graph.node})
    assert q.by_group() == {0: {"int8_static": len(g0)}, 1: {"fp32": len(g1)}}

    q = apply_policy(fp32, tmp_path / "b.onnx", QuantPolicy(("fp32", "int8_dynamic")), _calib(data))
    assert {n for n, p in q.applied.items() if p == "int8_dynamic"} == g1
    proto = onnx.load(str(q.path))
    by_name = {n.name: n.op_type for n in proto.graph.node}
    assert all(by_name[n] == "Conv" for n in g0)
    assert {by_name[q.renamed[n]] for n in g1} == {"MatMulInteger"}
    assert [n.op_type for n in proto.graph.node].count("MatMulInteger") == len(g1)
    assert "ConvInteger" not in by_name.values()


def test_composite_int4_int8_follows_op_types(fp32: Path, data: MultiTaskDataset, tmp_path: Path) -> None:
    ops = dict(quantizable_nodes(fp32))
    policy = QuantPolicy(("fp32", "int4_int8"))
    assert node_policy(fp32, policy) == {n: "fp32" if g == 0 else "int4_weight" if ops[n] == "Gemm" else "int8_static"
                                         for n, g in layer_groups(fp32, 2).items()}
    q = apply_policy(fp32, tmp_path / "w4a8.onnx", QuantPolicy.uniform("int4_int8", 2), _calib(data))
    assert not q.skipped
    assert {n: p for n, p in q.applied.items()} == {n: "int8_static" if op == "Conv" else "int4_weight"
                                                    for n, op in ops.items()}
    int8 = apply_policy(fp32, tmp_path / "i8.onnx", QuantPolicy.uniform("int8_static", 2), _calib(data))
    assert q.bytes < 0.75 * int8.bytes
    assert run_onnx(q.path, data.val.x[:3])["left"].shape == (3, 10)


def test_failed_quantization_keeps_fp32_with_reasons(fp32: Path, data: MultiTaskDataset, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OnnxError("x.onnx: quantized model does not run (boom)")

    monkeypatch.setattr("nasmtl.onnx.policy.quantize", broken)
    q = apply_policy(fp32, tmp_path / "kept.onnx", QuantPolicy(("int8_static", "fp32")), _calib(data))
    g0 = {n for n, g in q.groups.items() if g == 0}
    assert set(q.skipped) == g0 and all("boom" in r for r in q.skipped.values())
    assert set(q.applied.values()) == {"fp32"}
    assert q.path.read_bytes() == fp32.read_bytes()


def test_calibration_samples_reach_the_calibrator(fp32: Path, data: MultiTaskDataset, tmp_path: Path) -> None:
    def scales(path: Path) -> dict[str, float]:
        proto = onnx.load(str(path))
        return {t.name: float(onnx.numpy_helper.to_array(t).ravel()[0]) for t in proto.graph.initializer
                if t.name.endswith("_scale") and "output" in t.name}

    x = data.train.x[:64]
    few = quantize(fp32, tmp_path / "few.onnx", {}, calibration=x, default="int8_static", calibration_samples=1)
    many = quantize(fp32, tmp_path / "many.onnx", {}, calibration=x, default="int8_static", calibration_samples=64)
    assert scales(few.path) and scales(few.path).keys() == scales(many.path).keys()
    assert scales(few.path) != scales(many.path)
    with pytest.raises(ValueError, match="calibration_samples"):
        quantize(fp32, tmp_path / "bad.onnx", {}, calibration=x, calibration_samples=0)


# ---- measuring ---------------------------------------------------------------------------------


def test_metrics_come_from_onnxruntime_runs(fp32: Path, data: MultiTaskDataset, tmp_path: Path) -> None:
    q = apply_policy(fp32, tmp_path / "int8.onnx", QuantPolicy.uniform("int8_static", 2), _calib(data))
    for path in (fp32, q.path):
        sess = session(path)
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: data.val.x})))
        want = {f"{t.name}.{m}": v for t in data.tasks for m, v in t.metrics(outs[t.name], data.val.y[t.name]).items()}
        assert evaluate_onnx(path, data, "val") == want
    ref, got = run_onnx(fp32, data.val.x), run_onnx(q.path, data.val.x)
    assert any(np.abs(ref[k] - got[k]).max() > 0 for k in ref)
    m_fp, m_q = evaluate_onnx(fp32, data), evaluate_onnx(q.path, data)
    for t in data.tasks:
        same = np.array_equal(ref[t.name].argmax(1), got[t.name].argmax(1))
        assert (m_fp[f"{t.name}.accuracy"] == m_q[f"{t.name}.accuracy"]) or not same
    assert mean_primary(m_fp, data.tasks) > 0.15
    assert evaluate_onnx(q.path, data, "test").keys() == m_q.keys()
    with pytest.raises(ValueError, match="split"):
        evaluate_onnx(fp32, data, "dev")


def test_measure_policy_and_baselines(fp32: Path, data: MultiTaskDataset, tmp_path: Path) -> None:
    m = measure_policy(fp32, tmp_path / "m.onnx", QuantPolicy(("int8_static", "int4_weight")), _calib(data), data,
                       latency_runs=3)
    assert m.values["bytes"] == graph_stats(m.quant.path).bytes < m.quant.path.stat().st_size
    assert m.values["latency_ms"] > 0
    assert {k for k in m.values if "." in k} == {"left.accuracy", "right.accuracy"}
    assert m.values["left.accuracy"] == evaluate_onnx(m.quant.path, data)["left.accuracy"]
    b = baselines(fp32, _calib(data), data, out_dir=tmp_path, latency_runs=3)
    assert set(b) == {"fp32", "int8"}
    assert (tmp_path / "fp32.int8.onnx").is_file()
    assert b["fp32"]["bytes"] == graph_stats(fp32).bytes
    assert b["int8"]["bytes"] < 0.4 * b["fp32"]["bytes"]
    again = measure_onnx(tmp_path / "fp32.int8.onnx", data, latency_runs=3)
    assert again.keys() == b["int8"].keys() and again["bytes"] == b["int8"]["bytes"]
    assert b["int8"]["left.accuracy"] == again["left.accuracy"] == evaluate_onnx(tmp_path / "fp32.int8.onnx", data)[
        "left.accuracy"]
    assert b["fp32"]["left.accuracy"] == evaluate_onnx(fp32, data)["left.accuracy"]


# ---- the space ---------------------------------------------------------------------------------


def test_precision_names_match_the_quantizer() -> None:
    assert BASIC_PRECISIONS == ONNX_PRECISIONS
    assert set(BASIC_PRECISIONS) < set(PRECISIONS)


def test_space_protocol_round_trip_and_size() -> None:
    space = QuantSpace(3)
    assert isinstance(space, SearchSpace) and isinstance(space, DecisionSpace)
    assert space.size() == 4.0 ** 3
    assert QuantSpace(2, ("fp32", "int8_static")).size() == 4.0
    assert type(QuantSpace(np.int64(2)).n_groups) is int
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        p = space.sample(rng)
        s = space.encode(p)
        assert space.decode(s) == p and s == str(p)
        assert space.choices(p) == {f"quant.g{i}": v for i, v in enumerate(p.precisions)}
        assert space.from_choices(space.choices(p)) == p
        seen.add(s)
    assert len(seen) > 20
    assert space.decode("int8_static,fp32,int8_dynamic").precisions == ("int8_static", "fp32", "int8_dynamic")
    asked = []
    p = space.sample_with(lambda k, opts, w: asked.append((k, tuple(opts))) or opts[-1])
    assert p == QuantPolicy(("int4_weight",) * 3)
    assert asked == [(f"quant.g{i}", BASIC_PRECISIONS) for i in range(3)]


def test_decode_and_policy_errors() -> None:
    space = QuantSpace(2, ("fp32", "int8_static"))
    with pytest.raises(SpaceError, match="expected 2"):
        space.decode("fp32")
    with pytest.raises(SpaceError, match="'int4_weight'.*not an option"):
        space.decode("fp32,int4_weight")
    with pytest.raises(SpaceError, match="int2"):
        space.decode("fp32,int2")
    with pytest.raises(SpaceError, match="int2"):
        QuantPolicy(("int2",))
    with pytest.raises(SpaceError, match="at least one"):
        QuantPolicy(())
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(SpaceError, match="n_groups"):
            QuantSpace(bad)  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match="weights"):
        QuantSpace(2, ("fp32",), {"int8_static": 1.0})
    with pytest.raises(SpaceError, match="positive weight"):
        QuantSpace(2, ("fp32", "int8_static"), {"fp32": 0, "int8_static": 0})
    with pytest.raises(SpaceError, match="3 group"):
        space.encode(QuantPolicy(("fp32",) * 3))
    assert QuantPolicy(("fp32", "int8_static")).precision(5) == "int8_static"


def test_mutation_changes_exactly_one_group_and_crossover_mixes() -> None:
    space = QuantSpace(5, weights={"int8_dynamic": 0.0})
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = space.sample(rng)
        assert "int8_dynamic" not in p.precisions
        q = space.mutate(p, rng)
        diff = [i for i in range(5) if p.precisions[i] != q.precisions[i]]
        assert len(diff) == 1 and q.precisions[diff[0]] != "int8_dynamic"
    a, b = QuantPolicy(("fp32",) * 5), QuantPolicy(("int8_static",) * 5)
    kids = [space.crossover(a, b, rng) for _ in range(20)]
    assert all(set(k.precisions) <= {"fp32", "int8_static"} for k in kids)
    assert any(len(set(k.precisions)) == 2 for k in kids)
    single = QuantSpace(2, ("fp32",))
    assert single.mutate(QuantPolicy(("fp32", "fp32")), rng) == QuantPolicy(("fp32", "fp32"))


def test_prior_reweights_sampling() -> None:
    space = QuantSpace(2)
    rng = np.random.default_rng(2)
    prior = {"quant.g0": {"int4_weight": 1.0}, "quant.g1": {"fp32": 3.0, "int8_static": 1.0}}
    draws = [space.sample(rng, prior) for _ in range(200)]
    assert all(p.precisions[0] == "int4_weight" for p in draws)
    g1 = [p.precisions[1] for p in draws]
    assert set(g1) == {"fp32", "int8_static"} and g1.count("fp32") > g1.count("int8_static")
    unweighted = [space.sample(rng, {"quant.g0": {"nothing": 1.0}}).precisions[0] for _ in range(100)]
    assert len(set(unweighted)) == 4


def test_from_file_reads_the_shipped_space() -> None:
    space = QuantSpace.from_file(ROOT / "search_spaces" / "quant.toml", 3)
    assert space.options == PRECISIONS and space.n_groups == 3
    assert space.option_weights["int8_static"] > space.option_weights["fp32"]
    assert space.calibration_samples == 64
    assert QuantSpace.from_file("quant", 2).options == PRECISIONS


@pytest.mark.parametrize("text, match", [
    ("[options.int3]\nweight = 1\n", "options.int3: unknown precision"),
    ("[options.fp32]\nwieght = 1\n", "options.fp32.wieght: unknown key"),
    ("[options.fp32]\nweight = -1\n", "options.fp32.weight: must be"),
    ("[options.fp32]\ncalibration_samples = 8\n", "options.fp32.calibration_samples: only int8_static"),
    ("[options.int8_static]\ncalibration_samples = 0\n", "options.int8_static.calibration_samples: must be"),
    ("[options.fp32]\nweight = 0\n", "options: at least one precision needs a positive weight"),
    ("name = 'q'\n", "missing table \\[options\\]"),
    ("groups = 3\n[options.fp32]\n", "unknown key 'groups'"),
    ("[options\n", "not valid TOML"),
])
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "q.toml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=match) as err:
        QuantSpace.from_file(path, 2)
    assert str(path) in str(err.value) and "\n" not in str(err.value).strip()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="not found"):
        QuantSpace.from_file(tmp_path / "nope.toml", 2)
