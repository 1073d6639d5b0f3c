"""Export, parity, graph costs, error handling and latency of nasmtl.onnx."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from nasmtl.onnx import (
    OnnxError,
    ParityError,
    check_parity,
    compact_onnx,
    export_onnx,
    graph_stats,
    load_onnx,
    measure_latency,
    run_onnx,
    session,
)

INPUT_SHAPE = (3, 6, 6)


class TwoHeadCNN(nn.Module):
    """Conv -> grouped conv -> two linear heads; MACs are hand-computable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.cls = nn.Linear(8 * 6 * 6, 10)
        self.reg = nn.Linear(8 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.gconv(torch.relu(self.conv(x)))).flatten(1)
        return {"cls": self.cls(h), "reg": self.reg(h)}


# conv: 8 out channels * 36 positions * (3 * 9); grouped conv: 8 * 36 * (2 * 9); heads: 288 * 10 and 288 * 3
CNN_MACS = 8 * 36 * 27 + 8 * 36 * 18 + 288 * 10 + 288 * 3


class TinyAttention(nn.Module):
    """Tokens (6, 16): q = x Wq, s = q q^T, y = s q; three MatMuls, two of them between activations."""

    def __init__(self) -> None:
        super().__init__()
        self.wq = nn.Parameter(torch.randn(16, 8) * 0.1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q = x @ self.wq
        s = q @ q.transpose(-1, -2)
        return {"y": s @ q}


ATTN_MACS = 6 * 16 * 8 + 6 * 6 * 8 + 6 * 8 * 6


def _model(seed: int = 0) -> TwoHeadCNN:
    torch.manual_seed(seed)
    return TwoHeadCNN()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TwoHeadCNN, Path]:
    model = _model()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    export_onnx(model, INPUT_SHAPE, path, ["reg", "cls"])
    return model, path


def _x(n: int, shape: tuple[int, ...] = INPUT_SHAPE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_export_names_order_and_dynamic_batch(exported: tuple[TwoHeadCNN, Path]) -> None:
    model, path = exported
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["reg", "cls"]
    for vi in [*proto.graph.input, *proto.graph.output]:
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not model.training
    for n in (1, 7):
        out = run_onnx(path, _x(n))
        assert list(out) == ["reg", "cls"]
        assert out["reg"].shape == (n, 3) and out["cls"].shape == (n, 10)


def test_export_default_names_follow_dict_order(tmp_path: Path) -> None:
    res = export_onnx(_model(), INPUT_SHAPE, tmp_path / "sub" / "m.onnx")
    assert res.exporter == "torchscript" and res.seconds > 0 and res.path.exists()
    assert [o.name for o in load_onnx(res.path).graph.output] == ["cls", "reg"]


def test_export_rejects_bad_outputs(tmp_path: Path) -> None:
    with pytest.raises(OnnxError, match="output_names"):
        export_onnx(_model(), INPUT_SHAPE, tmp_path / "m.onnx", ["cls", "depth"])
    with pytest.raises(OnnxError, match="dict"):
        export_onnx(nn.Linear(4, 2), (4,), tmp_path / "lin.onnx")


def test_parity_within_tolerance_and_batching(exported: tuple[TwoHeadCNN, Path]) -> None:
    model, path = exported
    x = _x(37)
    res = check_parity(model, path, x, atol=1e-4, batch_size=8)
    assert res.ok and res.n == 37 and set(res.max_abs_diff) == {"reg", "cls"}
    assert res.worst <= 1e-4
    full = run_onnx(path, x)
    chunked = run_onnx(session(path), x, batch_size=5)
    for k in full:
        np.testing.assert_array_equal(full[k], chunked[k])


def test_parity_mismatch_raises_with_diffs(exported: tuple[TwoHeadCNN, Path]) -> None:
    _, path = exported
    other = _model(seed=123)
    with pytest.raises(ParityError) as info:
        check_parity(other, path, _x(4))
    err = info.value
    assert str(path) in str(err) and "reg" in str(err) and "cls" in str(err)
    assert set(err.max_abs_diff) == {"reg", "cls"}
    assert max(err.max_abs_diff.values()) > 1e-4
    res = check_parity(other, path, _x(4), raise_on_fail=False)
    assert not res.ok and res.worst > 1e-4


def test_graph_stats_conv_linear(exported: tuple[TwoHeadCNN, Path]) -> None:
    model, path = exported
    stats = graph_stats(path)
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert stats.macs == CNN_MACS
    assert stats.file_bytes == path.stat().st_size
    compact = path.with_name("compact.onnx")
    assert stats.bytes == compact_onnx(path, compact) == compact.stat().st_size < stats.file_bytes
    assert graph_stats(compact).bytes == stats.bytes
    assert stats.op_counts["Conv"] == 2 and stats.op_counts["Gemm"] == 2
    assert stats.n_nodes == sum(stats.op_counts.values())
    assert graph_stats(load_onnx(path)).macs == CNN_MACS


def test_graph_stats_matmul(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyAttention()
    path = tmp_path / "attn.onnx"
    export_onnx(model, (6, 16), path)
    stats = graph_stats(path)
    assert stats.op_counts.get("MatMul") == 3
    assert stats.params == sum(p.numel() for p in model.parameters()) == 128
    assert stats.macs == ATTN_MACS
    assert check_parity(model, path, _x(5, (6, 16))).ok


@pytest.mark.parametrize("kind", ["missing", "corrupt", "text", "empty"])
def test_bad_files_raise_onnx_error_naming_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.onnx"
    if kind == "corrupt":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    elif kind == "text":
        path.write_text("this is not a model\njust some text\n")
    elif kind == "empty":
        path.write_bytes(b"")
    for fn in (load_onnx, graph_stats, session, lambda p: run_onnx(p, _x(1))):
        with pytest.raises(OnnxError) as info:
            fn(path)
        assert str(path) in str(info.value)
        assert "not a valid ONNX model" in str(info.value)


def test_truncated_file_raises_onnx_error(exported: tuple[TwoHeadCNN, Path], tmp_path: Path) -> None:
    _, path = exported
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(OnnxError, match="truncated.onnx"):
        load_onnx(bad)


def test_latency_positive_finite(exported: tuple[TwoHeadCNN, Path]) -> None:
    _, path = exported
    lat = measure_latency(path, warmup=2, runs=7)
    assert lat.runs == 7 and lat.threads == 1
    assert math.isfinite(lat.median_ms) and lat.median_ms > 0
    assert math.isfinite(lat.p90_ms) and lat.p90_ms >= lat.median_ms
    lat2 = measure_latency(session(path, threads=2), INPUT_SHAPE, batch=3, warmup=1, runs=3)
    assert lat2.runs == 3 and lat2.threads == 2 and lat2.median_ms > 0


def test_dynamo_and_torchscript_agree(exported: tuple[TwoHeadCNN, Path], tmp_path: Path) -> None:
    model, ts_path = exported
    res = export_onnx(model, INPUT_SHAPE, tmp_path / "dyn.onnx", ["reg", "cls"], exporter="dynamo")
    assert res.exporter == "dynamo"
    proto = onnx.load(str(res.path))
    assert [o.name for o in proto.graph.output] == ["reg", "cls"]
    assert proto.graph.input[0].name == "input"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = _x(5)
    a, b = run_onnx(ts_path, x), run_onnx(res.path, x)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    assert check_parity(model, res.path, x[:1]).ok
    assert graph_stats(res.path).macs == CNN_MACS


def test_parity_relative_tolerance_scales_with_output_size(exported: tuple[TwoHeadCNN, Path]) -> None:
    model, path = exported
    x = _x(6) * 1e4
    exact = check_parity(model, path, x, atol=0.0, raise_on_fail=False)
    assert exact.scale["cls"] > 1e3
    worst = max(exact.max_abs_diff.values())
    assert check_parity(model, path, x, atol=worst / 2, rtol=worst / min(exact.scale.values())).ok
    other = _model(seed=123)
    with pytest.raises(ParityError, match=r"rtol=1e-05 \* max\|output\|"):
        check_parity(other, path, _x(4), atol=1e-4, rtol=1e-5)
