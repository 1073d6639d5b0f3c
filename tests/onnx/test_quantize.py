"""Mixed-precision quantization of exported models with onnxruntime: sizes, accuracy, per-node policies, skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from nasmtl.onnx import (
    OnnxError,
    QuantResult,
    compact_onnx,
    export_onnx,
    graph_stats,
    quantizable_nodes,
    quantize,
    run_onnx,
)

CNN_SHAPE = (3, 8, 8)
MLP_SHAPE = (64,)


class ConvLinear(nn.Module):
    """Two convs and two linear heads (exported as Conv and Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 8 * 8, 64)
        self.cls = nn.Linear(64, 5)
        self.reg = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1)
        h = torch.relu(self.fc(h))
        return {"cls": self.cls(h), "reg": self.reg(h)}


class MLP(nn.Module):
    """MatMul-heavy MLP with 256x256 layers; ``x @ W`` gives MatMul nodes, ``nn.Linear`` gives Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 256)
        self.w1 = nn.Parameter(torch.randn(256, 256) / 16)
        self.w2 = nn.Parameter(torch.randn(256, 256) / 16)
        self.out = nn.Linear(256, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.inp(x))
        h = torch.relu(h @ self.w1)
        h = torch.relu(h @ self.w2)
        return {"y": self.out(h)}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("q") / "cnn.onnx"
    export_onnx(ConvLinear(), CNN_SHAPE, path)
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("q") / "mlp.onnx"
    export_onnx(MLP(), MLP_SHAPE, path)
    return path


def _x(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _close(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], rel: float) -> None:
    """Every output within ``rel`` of the output's range (loose: quantization error)."""
    assert list(ref) == list(got)
    for k in ref:
        assert got[k].shape == ref[k].shape
        scale = float(np.abs(ref[k]).max()) + 1e-6
        err = float(np.abs(got[k] - ref[k]).max())
        assert err <= rel * scale, f"{k}: error {err:.4g} above {rel} x {scale:.4g}"


def _producers(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in proto.graph.node for o in n.output}


def _fed_by_dq(proto: onnx.ModelProto, node_name: str) -> bool:
    prod = _producers(proto)
    node = next(n for n in proto.graph.node if n.name == node_name)
    return any(i in prod and prod[i].op_type == "DequantizeLinear" for i in node.input[:2])


def test_quantizable_nodes(cnn: Path, mlp: Path) -> None:
    assert [op for _, op in quantizable_nodes(cnn)] == ["Conv", "Conv", "Gemm", "Gemm", "Gemm"]
    assert sorted(op for _, op in quantizable_nodes(mlp)) == ["Gemm", "Gemm", "MatMul", "MatMul"]
    names = [n for n, _ in quantizable_nodes(cnn)]
    assert len(set(names)) == len(names) and all(names)


@pytest.mark.parametrize("precision", ["int8_static", "int8_dynamic"])
def test_int8_smaller_and_close(cnn: Path, tmp_path: Path, precision: str) -> None:
    calib = _x(32, CNN_SHAPE, seed=1)
    out = tmp_path / f"{precision}.onnx"
    res = quantize(cnn, out, {}, calibration=calib, default=precision)
    assert isinstance(res, QuantResult) and res.path == out and res.seconds > 0
    assert not res.skipped
    assert res.applied == {n: precision for n, _ in quantizable_nodes(cnn)}
    fp32, q = graph_stats(cnn), graph_stats(out)
    assert q.bytes < 0.4 * fp32.bytes
    assert q.params == fp32.params and q.macs == fp32.macs
    x = _x(9, CNN_SHAPE, seed=2)
    _close(run_onnx(cnn, x), run_onnx(out, x), rel=0.1)
    assert run_onnx(out, x[:1])["cls"].shape == (1, 5)


def test_int4_weight_on_mlp(mlp: Path, tmp_path: Path) -> None:
    out = tmp_path / "int4.onnx"
    res = quantize(mlp, out, {}, default="int4_weight")
    assert not res.skipped
    assert set(res.applied.values()) == {"int4_weight"}
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulNBits") == 4 and "Gemm" not in ops and "MatMul" not in ops
    assert {res.renamed[n] for n in res.applied} == {n.name for n in proto.graph.node if n.op_type == "MatMulNBits"}
    fp32, q = graph_stats(mlp), graph_stats(out)
    assert q.bytes < 0.3 * fp32.bytes
    assert q.params == fp32.params and q.macs == fp32.macs
    x = _x(16, MLP_SHAPE, seed=3)
    _close(run_onnx(mlp, x), run_onnx(out, x), rel=0.15)


def test_int4_skips_conv_with_reason(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "int4cnn.onnx"
    res = quantize(cnn, out, {}, default="int4_weight")
    convs = [n for n, op in quantizable_nodes(cnn) if op == "Conv"]
    gemms = [n for n, op in quantizable_nodes(cnn) if op == "Gemm"]
    assert set(res.skipped) == set(convs)
    assert all("Conv" in res.skipped[c] for c in convs)
    assert all(res.applied[c] == "fp32" for c in convs)
    assert all(res.applied[g] == "int4_weight" for g in gemms)
    x = _x(4, CNN_SHAPE)
    _close(run_onnx(cnn, x), run_onnx(out, x), rel=0.15)


def test_mixed_policy_quantizes_exactly_the_named_nodes(cnn: Path, tmp_path: Path) -> None:
    (c1, _), (c2, _), (fc, _), (cls, _), (reg, _) = quantizable_nodes(cnn)
    policy = {c1: "int8_static", fc: "int4_weight", cls: "int8_dynamic", c2: "fp32"}
    out = tmp_path / "mixed.onnx"
    res = quantize(cnn, out, policy, calibration=_x(16, CNN_SHAPE, seed=4))
    assert res.applied == {c1: "int8_static", c2: "fp32", fc: "int4_weight", cls: "int8_dynamic", reg: "fp32"}
    assert not res.skipped
    assert res.renamed == {fc: fc + "_Q4", cls: cls + "_quant"}
    proto = onnx.load(str(out))
    by_name = {n.name: n for n in proto.graph.node}
    assert by_name[c1].op_type == "Conv" and _fed_by_dq(proto, c1)
    assert by_name[c2].op_type == "Conv" and not _fed_by_dq(proto, c2)
    assert by_name[fc + "_Q4"].op_type == "MatMulNBits" and fc not in by_name
    assert by_name[cls + "_quant"].op_type == "MatMulInteger" and cls not in by_name
    assert reg in by_name and not _fed_by_dq(proto, reg)
    assert by_name[reg].op_type in ("Gemm", "MatMul")
    assert [n.op_type for n in proto.graph.node].count("MatMulNBits") == 1
    assert [n.op_type for n in proto.graph.node].count("MatMulInteger") == 1
    assert [n.op_type for n in proto.graph.node].count("ConvInteger") == 0
    assert (
        sum(1 for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and _fed_by_dq(proto, n.name)) == 1
    )
    x = _x(6, CNN_SHAPE)
    _close(run_onnx(cnn, x), run_onnx(out, x), rel=0.15)


def test_unsupported_combinations_are_skipped(cnn: Path, tmp_path: Path) -> None:
    (c1, _), (c2, _), (fc, _), _, _ = quantizable_nodes(cnn)
    relu = next(n.name for n in onnx.load(str(cnn)).graph.node if n.op_type == "Relu")
    policy = {c1: "int4_weight", c2: "int8_static", fc: "int8_dynamic", relu: "int8_dynamic", "nope": "int8_static"}
    out = tmp_path / "skips.onnx"
    res = quantize(cnn, out, policy)
    assert set(res.skipped) == {c1, c2, relu, "nope"}
    assert "MatMul" in res.skipped[c1]
    assert "calibration" in res.skipped[c2]
    assert "Relu" in res.skipped[relu]
    assert "no node" in res.skipped["nope"]
    assert res.applied[c1] == res.applied[c2] == "fp32" and res.applied[fc] == "int8_dynamic"
    x = _x(3, CNN_SHAPE)
    _close(run_onnx(cnn, x), run_onnx(out, x), rel=0.1)


def test_fp32_policy_keeps_outputs_and_bad_precision_raises(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp32.onnx"
    res = quantize(cnn, out, {})
    assert set(res.applied.values()) == {"fp32"} and not res.skipped
    x = _x(3, CNN_SHAPE)
    ref, got = run_onnx(cnn, x), run_onnx(out, x)
    for k in ref:
        np.testing.assert_array_equal(ref[k], got[k])
    with pytest.raises(ValueError, match="precision"):
        quantize(cnn, tmp_path / "bad.onnx", {}, default="int2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibration shape"):
        quantize(cnn, tmp_path / "bad.onnx", {}, default="int8_static", calibration=_x(4, (3, 9, 9)))
    assert not (tmp_path / "bad.onnx").exists()


class Attention(nn.Module):
    """q = x Wq, y = (q q^T) q: one weight MatMul and two MatMuls between activations."""

    def __init__(self) -> None:
        super().__init__()
        self.wq = nn.Parameter(torch.randn(16, 32) / 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q = x @ self.wq
        return {"y": (q @ q.transpose(-1, -2)) @ q}


def test_activation_matmuls_skip_weight_precisions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = tmp_path / "attn.onnx"
    export_onnx(Attention(), (6, 16), src)
    weight_mm, *act_mms = [n for n, _ in quantizable_nodes(src)]
    assert len(act_mms) == 2
    for precision in ("int4_weight", "int8_dynamic"):
        res = quantize(src, tmp_path / f"{precision}.onnx", {}, default=precision)
        assert res.applied[weight_mm] == precision
        assert set(res.skipped) == set(act_mms)
        assert all("activation" in r for r in res.skipped.values())
    x = _x(8, (6, 16))
    res = quantize(src, tmp_path / "static.onnx", {}, default="int8_static", calibration=x)
    assert set(res.applied.values()) == {"int8_static"} and not res.skipped
    _close(run_onnx(src, x), run_onnx(tmp_path / "static.onnx", x), rel=0.1)


@pytest.mark.parametrize("precision", ["fp32", "int8_static", "int4_weight"])
def test_compact_onnx_same_outputs_fewer_bytes(cnn: Path, tmp_path: Path, precision: str) -> None:
    src = cnn
    if precision != "fp32":
        src = tmp_path / "q.onnx"
        quantize(cnn, src, {}, calibration=_x(16, CNN_SHAPE, seed=1), default=precision)
    dst = tmp_path / "min.onnx"
    n = compact_onnx(src, dst)
    assert n == dst.stat().st_size < src.stat().st_size
    small, big = onnx.load(str(dst)), onnx.load(str(src))
    assert not small.graph.value_info and all(not node.name for node in small.graph.node)
    assert [v.name for v in small.graph.output] == [v.name for v in big.graph.output] == ["cls", "reg"]
    assert [n.op_type for n in small.graph.node] == [n.op_type for n in big.graph.node]
    assert max(len(t.name) for t in small.graph.initializer) <= 3
    x = _x(5, CNN_SHAPE, seed=3)
    ref, got = run_onnx(src, x), run_onnx(dst, x)
    assert all(np.array_equal(ref[k], got[k]) for k in ref)


def test_compact_onnx_rejects_a_non_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(OnnxError, match="bad.onnx"):
        compact_onnx(bad, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_int8_static_stays_int8_between_quantized_layers(cnn: Path, tmp_path: Path) -> None:
    calib = _x(16, CNN_SHAPE, seed=1)
    full = quantize(cnn, tmp_path / "all.onnx", {}, calibration=calib, default="int8_static")
    ops = [n.op_type for n in onnx.load(str(full.path)).graph.node]
    assert "Relu" not in ops and ops.count("Flatten") == 1
    assert set(full.applied) == {n for n, _ in quantizable_nodes(cnn)}
    c1 = quantizable_nodes(cnn)[0][0]
    one = quantize(cnn, tmp_path / "one.onnx", {c1: "int8_static"}, calibration=calib)
    assert [n.op_type for n in onnx.load(str(one.path)).graph.node].count("Relu") == 3
    x = _x(6, CNN_SHAPE, seed=5)
    _close(run_onnx(cnn, x), run_onnx(full.path, x), rel=0.1)
