"""ONNX graph reading and static costs: parameters, MACs and bytes read off the graph itself."""

from __future__ import annotations

import copy
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto

from nasmtl.errors import NasmtlError, typed_line

PathLike = Union[str, "os.PathLike[str]"]


class OnnxError(NasmtlError, RuntimeError):
    """Any failure reading, exporting, running or quantizing an ONNX model; the message names the file."""


class ParityError(OnnxError):
    """ONNX outputs differ from the torch outputs by more than the tolerance."""

    def __init__(self, message: str, max_abs_diff: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.max_abs_diff = dict(max_abs_diff or {})


def load_onnx(path: PathLike) -> onnx.ModelProto:
    """Load and check an ONNX file, turning every parse or check failure into one OnnxError naming the file."""
    p = Path(path)
    if not p.exists():
        raise OnnxError(f"{p}: not a valid ONNX model (file not found)")
    if not p.is_file():
        raise OnnxError(f"{p}: not a valid ONNX model (not a regular file)")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError, external-data errors, ...
        raise OnnxError(f"{p}: not a valid ONNX model ({typed_line(exc)})") from None
    _validate(model, str(p))
    return model


def _validate(model: onnx.ModelProto, where: str) -> None:
    """Reject protobufs that parsed but are not models (empty, text, other messages)."""
    if model.ir_version <= 0 or not model.opset_import:
        raise OnnxError(f"{where}: not a valid ONNX model (missing ir_version or opset_import)")
    if len(model.graph.output) == 0:
        raise OnnxError(f"{where}: not a valid ONNX model (graph has no outputs)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxError(f"{where}: not a valid ONNX model ({typed_line(exc)})") from None


def as_model(path_or_model: PathLike | onnx.ModelProto | bytes) -> tuple[onnx.ModelProto, str]:
    """A ModelProto and a name for messages, from a path, a ModelProto or serialized bytes."""
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, "<model>"
    if isinstance(path_or_model, (bytes, bytearray)):
        try:
            model = onnx.load_from_string(bytes(path_or_model))
        except Exception as exc:
            raise OnnxError(f"<bytes>: not a valid ONNX model ({typed_line(exc)})") from None
        _validate(model, "<bytes>")
        return model, "<bytes>"
    return load_onnx(path_or_model), str(path_or_model)


_WEIGHT_DTYPES = {
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.DOUBLE,
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.INT16,
    TensorProto.UINT16,
    TensorProto.INT4,
    TensorProto.UINT4,
}
# Inputs that hold quantization scales, zero points or indices rather than weights, per op type.
_NON_WEIGHT_INPUTS: dict[str, set[int]] = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "DynamicQuantizeLinear": set(),
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "QGemm": {1, 2, 4, 5, 7, 8},
    "QLinearAdd": {1, 2, 4, 5, 6, 7},
    "QLinearMul": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {2, 3},
    "MatMulInteger": {2, 3},
    "DynamicQuantizeMatMul": {2, 3},
    "MatMulIntegerToFloat": {2, 3, 4, 5},
    "MatMulNBits": {2, 3, 4},
}
# int32 inputs that are quantized biases (counted as weights).
_INT32_BIAS_INPUTS: dict[str, set[int]] = {"DequantizeLinear": {0}, "QLinearConv": {8}, "QGemm": {6}}


@dataclass
class GraphStats:
    """Static costs of one ONNX graph: weight elements, multiply-accumulates at batch 1, bytes.

    ``bytes`` is the size as shipped (``compacted``: no node names or shape annotations), so that it
    measures weights and structure rather than the exporter's naming; ``file_bytes`` is the size as given.
    """

    params: int
    macs: int
    bytes: int
    file_bytes: int
    n_nodes: int
    op_counts: dict[str, int] = field(default_factory=dict)


def graph_stats(path_or_model: PathLike | onnx.ModelProto | bytes) -> GraphStats:
    """Params, MACs (batch 1), bytes (as shipped and as given), node and op counts of an ONNX file or model."""
    model, where = as_model(path_or_model)
    if isinstance(path_or_model, (bytes, bytearray)):
        size = len(path_or_model)
    elif isinstance(path_or_model, onnx.ModelProto):
        size = path_or_model.ByteSize()
    else:
        size = Path(path_or_model).stat().st_size
    graph = model.graph
    return GraphStats(
        params=count_params(graph),
        macs=_count_macs(model, where),
        bytes=shipped_bytes(model),
        file_bytes=int(size),
        n_nodes=len(graph.node),
        op_counts=dict(Counter(n.op_type for n in graph.node)),
    )


def compacted(src: PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a model as a deployment would ship it (checked with onnx's checker).

    Node names, doc strings, producer fields and ``value_info`` are dropped and every internal tensor
    (initializers included) is renamed to a short hex id; graph inputs and outputs keep their names,
    so the model computes the same outputs. Files with subgraphs (If/Loop) keep their tensor names.
    ``metadata_props`` (what a file says about itself, ``nasmtl.onnx.metadata``) are kept as they are.
    """
    if isinstance(src, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(src)
    else:
        model = load_onnx(src)
    graph = model.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    nested = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                 for n in graph.node for a in n.attribute)
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if nested or not name or name in keep:
            return name
        return short.setdefault(name, format(len(short), "x"))

    for t in graph.initializer:
        t.name = rename(t.name)
        t.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [rename(i) for i in node.input]
        node.output[:] = [rename(o) for o in node.output]
    graph.ClearField("value_info")
    graph.doc_string = ""
    for field_name in ("doc_string", "producer_name", "producer_version"):
        model.ClearField(field_name)
    onnx.checker.check_model(model)
    return model


def shipped_bytes(src: PathLike | onnx.ModelProto) -> int:
    """Bytes of the network as shipped: ``compacted``, without the descriptive ``metadata_props`` (about
    1 kB on a final model), so a file with metadata and one without count the same network alike."""
    model = compacted(src)
    model.ClearField("metadata_props")
    return model.ByteSize()


def compact_onnx(src: PathLike, dst: PathLike) -> int:
    """Write ``src`` to ``dst`` compacted (``compacted``); returns the bytes written."""
    data = compacted(src).SerializeToString()
    Path(dst).write_bytes(data)
    return len(data)


def count_params(graph: onnx.GraphProto) -> int:
    """Elements of weight initializers and non-scalar Constant tensors; quantization scales/zero points excluded."""
    tensors: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and np.prod(attr.t.dims) > 1:
                    tensors[node.output[0]] = attr.t
    excluded: set[str] = set()
    int32_bias: set[str] = set()
    nbits_elems: dict[str, int] = {}
    consumed: set[str] = set()
    for node in graph.node:
        skip = _NON_WEIGHT_INPUTS.get(node.op_type, set())
        bias = _INT32_BIAS_INPUTS.get(node.op_type, set())
        for i, name in enumerate(node.input):
            consumed.add(name)
            if i in skip:
                excluded.add(name)
            if i in bias:
                int32_bias.add(name)
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            nbits_elems[node.input[1]] = int(attrs.get("K", 0)) * int(attrs.get("N", 0))
    for name in tensors:
        for suffix in ("_scale", "_zero_point"):
            if name.endswith(suffix) and name[: -len(suffix)] + "_quantized" in tensors:
                excluded.add(name)
    total = 0
    for name, t in tensors.items():
        if name in excluded or name not in consumed:
            continue
        if name in nbits_elems:
            total += nbits_elems[name]
        elif t.data_type in _WEIGHT_DTYPES or (t.data_type == TensorProto.INT32 and name in int32_bias):
            total += int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
    return total


def _fixed_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph inputs have the leading (batch) dim set to 1 and whose outputs carry no shapes."""
    m = copy.deepcopy(model)
    inits = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        shape = inp.type.tensor_type.shape
        if len(shape.dim) and not shape.dim[0].HasField("dim_value"):
            shape.dim[0].Clear()
            shape.dim[0].dim_value = 1
    for out in m.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    m.graph.ClearField("value_info")
    return m


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor name -> static shape (None for unknown dims) after shape inference at batch 1."""
    fixed = _fixed_batch(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:
        inferred = fixed
    shapes = _collect_shapes(inferred)
    if _needs_symbolic(inferred, shapes):
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            sym = SymbolicShapeInference.infer_shapes(fixed, auto_merge=True, guess_output_rank=True)
            for k, v in _collect_shapes(sym).items():
                if k not in shapes or None in shapes[k]:
                    shapes[k] = v
        except Exception:
            pass
    return shapes


def _collect_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Known tensor shapes from value_info, graph inputs/outputs and initializers."""
    out: dict[str, list[int | None]] = {}
    g = model.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = list(attr.t.dims)
    return out


_MAC_OPS = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "QLinearConv",
    "ConvInteger",
    "MatMulInteger",
    "QLinearMatMul",
    "MatMulNBits",
    "QGemm",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}


def _needs_symbolic(model: onnx.ModelProto, shapes: dict[str, list[int | None]]) -> bool:
    """Whether some MAC op lacks a fully known output shape after onnx's own inference."""
    for node in model.graph.node:
        if node.op_type in _MAC_OPS:
            s = shapes.get(node.output[0])
            if s is None or None in s:
                return True
    return False


def numel(shape: list[int | None] | None) -> int | None:
    """Product of dims, None if any is unknown."""
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _count_macs(model: onnx.ModelProto, where: str) -> int:
    """Multiply-accumulates of Conv/Gemm/MatMul-like nodes (and quantized variants) at batch 1."""
    if not any(n.op_type in _MAC_OPS for n in model.graph.node):
        return 0
    shapes = tensor_shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type in _MAC_OPS:
            total += node_macs(node, shapes)
    return total


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int:
    """MACs of one node; 0 where shapes stay unknown."""
    op = node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def shape(i: int) -> list[int | None] | None:
        return shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    out_numel = numel(shapes.get(node.output[0]))
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shape(3 if op == "QLinearConv" else 1)
        per_out = numel(w[1:]) if w else None
        return out_numel * per_out if out_numel is not None and per_out is not None else 0
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        in_numel = numel(x)
        per_in = numel(w[1:]) if w else None
        return in_numel * per_in if in_numel is not None and per_in is not None else 0
    if op in ("Gemm", "QGemm"):
        a = shape(0)
        if a is None or len(a) != 2 or out_numel is None:
            return 0
        k = a[0] if attrs.get("transA", 0) else a[1]
        return out_numel * k if k is not None else 0
    if op == "MatMulNBits":
        a = shape(0)
        k, n = int(attrs.get("K", 0)), int(attrs.get("N", 0))
        rows = numel(a[:-1]) if a else None
        return (rows if rows is not None else 1) * k * n
    a = shape(0)
    if a is None or out_numel is None or not a:
        return 0
    k = a[-1]
    return out_numel * k if k is not None else 0
