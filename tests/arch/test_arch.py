"""The IR: shape inference and its errors, costs against torch, every op built, exported and parity-checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasmtl.arch import (
    ArchBuilder,
    OpError,
    ShapeError,
    add_head,
    arch_cost,
    depth,
    from_dict,
    node_costs,
    op_names,
    to_dict,
    to_torch,
)
from nasmtl.arch.compose import compose, separate_layout, shared_layout
from nasmtl.examples import two_branch_cnn, two_branch_cnn_stages

IMG = (4, 8, 8)
TOK = (6, 12)


def _single(op: str, in_shape: tuple[int, ...], n_inputs: int = 1, **attrs) -> ArchBuilder:
    b = ArchBuilder(in_shape)
    ins = [b.add("identity", b.input) for _ in range(n_inputs)] if n_inputs > 1 else [b.input]
    y = b.add(op, *ins, name="op", **attrs)
    add_head(b, y, "t", 3)
    return b


# One small network per registered op; every op must appear here.
OP_CASES = {
    "identity": lambda: _single("identity", IMG),
    "dropout": lambda: _single("dropout", TOK, p=0.2),
    "relu": lambda: _single("relu", IMG),
    "gelu": lambda: _single("gelu", TOK),
    "sigmoid": lambda: _single("sigmoid", IMG),
    "tanh": lambda: _single("tanh", TOK),
    "softmax": lambda: _single("softmax", TOK, axis=0),
    "linear": lambda: _single("linear", TOK, out=5),
    "conv": lambda: _single("conv", IMG, out=6, k=3, stride=2, groups=2),
    "dwconv": lambda: _single("dwconv", IMG, k=5, multiplier=2),
    "batchnorm": lambda: _single("batchnorm", TOK),
    "layernorm": lambda: _single("layernorm", IMG),
    "maxpool": lambda: _single("maxpool", IMG, k=3, stride=2),
    "avgpool": lambda: _single("avgpool", IMG, k=3, stride=1),
    "globalpool": lambda: _single("globalpool", IMG, mode="max"),
    "add": lambda: _single("add", IMG, n_inputs=3),
    "multiply": lambda: _single("multiply", TOK, n_inputs=2),
    "concat": lambda: _single("concat", IMG, n_inputs=2),
    "matmul": lambda: _single("matmul", TOK, n_inputs=2, transpose_b=True, scale=True),
    "reshape": lambda: _single("reshape", TOK, shape=(12, 6)),
    "permute": lambda: _single("permute", TOK, perm=(1, 0)),
    "flatten": lambda: _single("flatten", IMG),
    "im2col": lambda: _single("im2col", IMG, k=2),
    "col2im": lambda: _single("col2im", (16, 5), h=4, w=4),
    "chunk": lambda: _single("chunk", IMG, n=2, index=1),
    "posenc": lambda: _single("posenc", TOK),
    "zero": lambda: _single("zero", IMG, out=5, stride=2),
}


def test_every_registered_op_has_a_case():
    assert sorted(OP_CASES) == op_names()


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_op_builds_costs_exports_with_parity(op, tmp_path):
    from nasmtl.onnx import check_parity, export_onnx, graph_stats

    arch = OP_CASES[op]().build()
    model = to_torch(arch, seed=0).eval()
    torch_params = sum(p.numel() for p in model.parameters())
    assert arch_cost(arch).params == torch_params
    x = np.random.default_rng(0).standard_normal((5, *arch.input_shape)).astype(np.float32)
    out = model(torch.from_numpy(x))
    assert out["t"].shape == (5, 3)
    path = tmp_path / f"{op}.onnx"
    export_onnx(model, arch.input_shape, path, ["t"])
    res = check_parity(model, path, x, atol=1e-4)
    assert res.ok and res.max_abs_diff["t"] <= 1e-4
    stats = graph_stats(path)
    assert stats.params == torch_params
    assert stats.macs == arch_cost(arch).macs


def test_macs_by_hand():
    b = ArchBuilder((3, 8, 8))
    c = b.add("conv", b.input, name="c", out=4, k=3, stride=1)
    t = b.add("im2col", c, name="p", k=2)  # (16, 16)
    q = b.add("matmul", t, t, name="mm", transpose_b=True)  # (16, 16)
    add_head(b, q, "t", 2)
    arch = b.build()
    costs = node_costs(arch)
    assert costs["c"].macs == 4 * 8 * 8 * 3 * 9
    assert costs["c"].params == 4 * 3 * 9 + 4
    assert costs["mm"].macs == 16 * 16 * 16
    assert costs["t_head"].macs == 16 * 2
    assert depth(arch) == 5


def test_shape_error_names_the_node():
    b = ArchBuilder((3, 8, 8))
    x = b.add("linear", b.input, out=4)
    with pytest.raises(ShapeError, match=r"node 'bad' \(add\).*equal shapes"):
        b.add("add", x, b.input, name="bad")
    with pytest.raises(ShapeError, match=r"node 'tok' \(conv\).*image"):
        t = b.add("flatten", x)
        b.add("conv", t, name="tok", out=3)
    with pytest.raises(ShapeError, match=r"node 'g' \(conv\).*groups=3"):
        b.add("conv", x, name="g", out=6, groups=3)
    with pytest.raises(ShapeError, match=r"node 'c2i' \(col2im\).*needs 9 tokens"):
        t = b.add("im2col", x, k=2)
        b.add("col2im", t, name="c2i", h=3, w=3)
    with pytest.raises(ShapeError, match=r"takes 2 input"):
        b.add("matmul", x, name="mm1")


def test_unknown_op_and_attribute():
    b = ArchBuilder((3, 8, 8))
    with pytest.raises(OpError, match="unknown op 'convv'.*did you mean conv"):
        b.add("convv", b.input)
    with pytest.raises(OpError, match="has no attribute.*kernel"):
        b.add("conv", b.input, out=3, kernel=3)
    with pytest.raises(OpError, match="needs attribute.*out"):
        b.add("linear", b.input)


def test_dangling_node_rejected():
    b = ArchBuilder((4,))
    b.add("relu", b.input, name="lonely")
    add_head(b, b.input, "t", 2)
    with pytest.raises(ShapeError, match="lonely.*feed no output"):
        b.build()


def test_dict_round_trip():
    arch = two_branch_cnn((1, 36, 36), {"left": 10, "right": 10})
    back = from_dict(to_dict(arch))
    assert to_dict(back) == to_dict(arch)
    assert arch_cost(back) == arch_cost(arch)


def test_layout_extremes_parameter_ratio():
    heads = {"a": 10, "b": 10, "c": 10}
    stages = two_branch_cnn_stages((1, 16, 16), width=8)
    shared = compose(stages, shared_layout(list(heads), 2), heads)
    separate = compose(stages, separate_layout(list(heads), 2), heads)
    head_params = sum(c.params for n, c in node_costs(shared).items() if n.endswith("_head"))
    trunk = arch_cost(shared).params - head_params
    # fully separate = one trunk per task, same heads
    assert arch_cost(separate).params == 3 * trunk + head_params
    # per-task cost of a separate network is one trunk and one head
    assert arch_cost(separate, ["a"]).params == trunk + head_params // 3
    out = to_torch(separate, seed=0)(torch.zeros(2, 1, 16, 16))
    assert list(out) == ["a", "b", "c"]


def test_layout_must_refine():
    heads = {"a": 2, "b": 2, "c": 2}
    stages = two_branch_cnn_stages((1, 16, 16), width=4)
    with pytest.raises(ShapeError, match="does not refine"):
        compose(stages, [[["a"], ["b", "c"]], [["a", "b"], ["c"]]], heads)
    with pytest.raises(ShapeError, match="does not partition"):
        compose(stages, [[["a", "b"]], [["a"], ["b"]]], heads)


def test_seeded_build_is_deterministic():
    arch = two_branch_cnn((1, 36, 36), {"left": 10, "right": 10}, width=8)
    m1, m2 = to_torch(arch, seed=3), to_torch(arch, seed=3)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_patch_conv_lowering_keeps_shape_and_costs(tmp_path):
    from nasmtl.arch.lower import lower_patch_convs
    from nasmtl.onnx import export_onnx, load_onnx

    b = ArchBuilder((3, 12, 12))
    t = b.add("im2col", b.input, k=3, stride=1, padding=1)
    t = b.add("linear", t, out=8)
    x = b.add("col2im", t, name="back", h=12, w=12)
    add_head(b, x, "t", 2)
    arch = b.build()
    low = lower_patch_convs(arch)
    assert low.graph.nodes["back"]["op"] == "conv"
    assert low.shape("back") == arch.shape("back") == (8, 12, 12)
    assert arch_cost(low) == arch_cost(arch)
    assert len(low.graph) == len(arch.graph) - 2
    export_onnx(to_torch(low, seed=0), low.input_shape, tmp_path / "low.onnx", ["t"])
    ops = {n.op_type for n in load_onnx(tmp_path / "low.onnx").graph.node}
    assert "Conv" in ops and "MatMul" not in ops


@pytest.mark.parametrize("size, grid", [(9, 2), (36, 2), (3, 3), (1, 1)])
def test_grid_head_keeps_a_coarse_map(size, grid, tmp_path):
    from nasmtl.onnx import check_parity, export_onnx

    b = ArchBuilder((4, size, size))
    add_head(b, b.input, "t", 3, pool="grid")
    arch = b.build()
    feats = arch.inputs_of(arch.outputs["t"])[0]
    assert arch.shape(feats) == (4 * grid * grid,)
    model = to_torch(arch, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((2, 4, size, size)).astype(np.float32)
    export_onnx(model, arch.input_shape, tmp_path / "g.onnx", ["t"])
    assert check_parity(model, tmp_path / "g.onnx", x, atol=1e-4).ok
    with pytest.raises(ValueError, match="unknown head pooling"):
        add_head(ArchBuilder((4, 8, 8)), "input", "u", 2, pool="mean")
