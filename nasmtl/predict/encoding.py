"""ONNX graph -> encodings a predictor reads: a labelled networkx graph, a fixed-length feature vector, a text.

The input is any valid ONNX model (a path, a ``ModelProto`` or serialized bytes), so one encoding
serves grammar spaces, cell spaces and models nasmtl did not make. Everything here is
deterministic: nodes are numbered in the graph's order and hashed features use blake2b, never
Python's salted ``hash``. ``ENCODING_VERSION`` changes whenever a feature changes meaning; a
predictor card records it and loading refuses a mismatch.

Feature vector (``FEATURE_NAMES`` names each column):

* ``op:TYPE`` — log(1 + count) of each op type of a fixed vocabulary, ``op:other`` for the rest;
* ``graph:*`` — nodes, edges, depth (longest input-to-output path), width per depth level (max,
  mean), branch and merge points, graph inputs and outputs (log counts);
* ``cost:*`` — log params, MACs at batch 1, bytes, activation elements (sum, max), conv kernel
  histogram (1x1, 3x3, >=5), strided and grouped convs, channel statistics, MAC shares;
* ``wl:K`` — hashed Weisfeiler-Lehman subtree features: node labels (op, kernel, stride) refined
  ``WL_ITERATIONS`` times over predecessors and successors, every label of every round counted into
  ``WL_BUCKETS`` buckets (log counts).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import networkx as nx
import numpy as np
import onnx

from nasmtl.onnx.graph import PathLike, as_model, count_params, node_macs, numel, tensor_shapes

ENCODING_VERSION = "onnx-graph-1"
"""Version of the graph, feature and text encodings; bumped whenever one changes meaning."""

WL_ITERATIONS = 2
WL_BUCKETS = 128

OP_VOCAB: tuple[str, ...] = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization",
    "InstanceNormalization", "GroupNormalization", "Relu", "LeakyRelu", "Gelu", "Sigmoid", "Tanh",
    "Softmax", "Erf", "Clip", "HardSigmoid", "HardSwish", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt",
    "Concat", "Split", "Slice", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Gather",
    "Shape", "Constant", "Identity", "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean", "ReduceSum", "Pad", "Resize", "Tile", "Expand", "Where", "Cast", "Dropout",
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
    "ConvInteger", "DynamicQuantizeLinear", "MatMulNBits",
)
"""Op types counted one by one; any other op counts as ``op:other``."""

_GRAPH_NAMES = ("nodes", "edges", "depth", "width_max", "width_mean", "branches", "merges",
                "inputs", "outputs")
_COST_NAMES = ("params", "macs", "bytes", "act_sum", "act_max", "conv_k1", "conv_k3", "conv_k5plus",
               "conv_strided", "conv_grouped", "channels_max", "channels_mean", "mac_ops",
               "conv_mac_share", "matmul_mac_share")

FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"op:{o}" for o in OP_VOCAB) + ("op:other",)
    + tuple(f"graph:{n}" for n in _GRAPH_NAMES)
    + tuple(f"cost:{n}" for n in _COST_NAMES)
    + tuple(f"wl:{i}" for i in range(WL_BUCKETS))
)
"""Name of each column of :func:`feature_vector`."""

N_FEATURES = len(FEATURE_NAMES)

INPUT_OP = "GraphInput"
OUTPUT_OP = "GraphOutput"
_CONV_OPS = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"}
_MATMUL_OPS = {"Gemm", "MatMul", "QLinearMatMul", "MatMulInteger", "MatMulNBits", "QGemm",
               "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_POOL_OPS = {"AveragePool", "MaxPool", "LpPool"}
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "QLinearConv": 3,
                 "ConvInteger": 1, "QLinearMatMul": 3, "MatMulInteger": 1}


@dataclass
class Encoding:
    """All three encodings of one ONNX model."""

    graph: nx.DiGraph
    features: np.ndarray
    text: str
    version: str = ENCODING_VERSION


def encode(model: PathLike | onnx.ModelProto | bytes) -> Encoding:
    """The graph, feature vector and text of one ONNX model (a file, ModelProto or bytes)."""
    g = to_graph(model)
    return Encoding(g, graph_features(g), graph_text(g))


def feature_vector(model: PathLike | onnx.ModelProto | bytes) -> np.ndarray:
    """The fixed-length float32 feature vector (columns as in ``FEATURE_NAMES``) of one ONNX model."""
    return graph_features(to_graph(model))


def describe(model: PathLike | onnx.ModelProto | bytes) -> str:
    """The ONNX-Net-style text of one ONNX model: one line of words per node."""
    return graph_text(to_graph(model))


# ---- (a) the labelled graph ----------------------------------------------------------------------


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def to_graph(model: PathLike | onnx.ModelProto | bytes) -> nx.DiGraph:
    """A DiGraph of the model: one node per ONNX node plus graph inputs/outputs, edges along tensors.

    Node attributes: ``op`` (op type, ``domain:op`` outside the default domain), ``kernel``,
    ``stride``, ``group`` (convs and pools), ``cin``/``cout`` (channels or features of weighted
    ops), ``shape`` (first output, batch 1, ``None`` for unknown dims), ``macs``, ``params``,
    ``index`` (position in the ONNX graph). Graph attributes: ``params``, ``macs``, ``bytes``.
    """
    m, _ = as_model(model)
    graph = m.graph
    shapes = tensor_shapes(m) if len(graph.node) else {}
    inits = {t.name: t for t in graph.initializer}
    g = nx.DiGraph()
    producer: dict[str, str] = {}
    k = 0
    for vi in graph.input:
        if vi.name in inits:
            continue
        nid = f"in{k}"
        k += 1
        g.add_node(nid, op=INPUT_OP, index=-1, shape=_shape_tuple(shapes.get(vi.name)), name=vi.name,
                   macs=0, params=0, kernel=None, stride=None, group=None, cin=None, cout=None)
        producer[vi.name] = nid
    for i, node in enumerate(graph.node):
        nid = f"n{i}"
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        kernel = stride = group = cin = cout = None
        if node.op_type in _CONV_OPS or node.op_type in _POOL_OPS:
            ks = _attr(node, "kernel_shape")
            w_idx = _WEIGHT_INPUT.get(node.op_type)
            w = shapes.get(node.input[w_idx]) if w_idx is not None and len(node.input) > w_idx else None
            if ks is None and w is not None and len(w) > 2:
                ks = w[2:]
            kernel = tuple(int(v) for v in ks) if ks is not None else None
            st = _attr(node, "strides")
            stride = tuple(int(v) for v in st) if st else (1,) * (len(kernel) if kernel else 2)
            group = int(_attr(node, "group", 1)) if node.op_type in _CONV_OPS else None
            if w is not None and len(w) >= 2 and node.op_type in _CONV_OPS:
                cout, cin = (w[1] * (group or 1), w[0]) if node.op_type == "ConvTranspose" else (w[0], w[1] * (group or 1))
        elif node.op_type in _WEIGHT_INPUT:
            w = shapes.get(node.input[_WEIGHT_INPUT[node.op_type]]) if len(node.input) > 1 else None
            if w is not None and len(w) >= 2:
                trans = node.op_type == "Gemm" and _attr(node, "transB", 0)
                cin, cout = (w[-1], w[-2]) if trans else (w[-2], w[-1])
        weights = sum(int(np.prod(inits[n].dims, dtype=np.int64)) for n in node.input if n in inits)
        macs = node_macs(node, shapes) if node.output else 0
        out_shape = _shape_tuple(shapes.get(node.output[0])) if node.output else None
        g.add_node(nid, op=op, index=i, shape=out_shape, name=node.name, macs=int(macs), params=weights,
                   kernel=kernel, stride=stride, group=group, cin=cin, cout=cout)
        for t in node.input:
            if t and t in producer:
                g.add_edge(producer[t], nid)
        for t in node.output:
            if t:
                producer[t] = nid
    for j, vi in enumerate(graph.output):
        nid = f"out{j}"
        g.add_node(nid, op=OUTPUT_OP, index=len(graph.node) + j, shape=_shape_tuple(shapes.get(vi.name)),
                   name=vi.name, macs=0, params=0, kernel=None, stride=None, group=None, cin=None, cout=None)
        if vi.name in producer:
            g.add_edge(producer[vi.name], nid)
    g.graph["params"] = count_params(graph)
    g.graph["macs"] = int(sum(d["macs"] for _, d in g.nodes(data=True)))
    g.graph["bytes"] = int(m.ByteSize())
    return g


def _shape_tuple(shape: Sequence[int | None] | None) -> tuple[int | None, ...] | None:
    return None if shape is None else tuple(shape)


# ---- (b) the feature vector ----------------------------------------------------------------------


def _log(v: float) -> float:
    return math.log1p(max(float(v), 0.0))


def _label(d: dict[str, Any]) -> str:
    """The initial WL label of a node: op, then kernel and stride where the op has them."""
    parts = [d["op"]]
    if d.get("kernel"):
        parts.append("k" + "x".join(map(str, d["kernel"])))
    if d.get("stride") and any(s != 1 for s in d["stride"]):
        parts.append("s" + "x".join(map(str, d["stride"])))
    if d.get("group") and d["group"] > 1:
        parts.append("g" + ("dw" if d.get("cin") == d["group"] else str(d["group"])))
    return "/".join(parts)


def _bucket(label: str) -> int:
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "little") % WL_BUCKETS


def wl_labels(g: nx.DiGraph, iterations: int = WL_ITERATIONS) -> list[list[str]]:
    """Weisfeiler-Lehman labels of every node, one list per round (round 0: the node labels)."""
    order = sorted(g.nodes, key=lambda n: (g.nodes[n]["index"], n))
    labels = {n: _label(g.nodes[n]) for n in order}
    rounds = [[labels[n] for n in order]]
    for _ in range(iterations):
        new = {}
        for n in order:
            ins = ",".join(sorted(labels[p] for p in g.predecessors(n)))
            outs = ",".join(sorted(labels[s] for s in g.successors(n)))
            new[n] = hashlib.blake2b(f"{labels[n]}<{ins}>{outs}".encode(), digest_size=8).hexdigest()
        labels = new
        rounds.append([labels[n] for n in order])
    return rounds


def graph_features(g: nx.DiGraph) -> np.ndarray:
    """The feature vector of a graph made by :func:`to_graph` (columns as in ``FEATURE_NAMES``)."""
    f = np.zeros(N_FEATURES, dtype=np.float64)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    ops = Counter(d["op"] for _, d in g.nodes(data=True) if d["op"] not in (INPUT_OP, OUTPUT_OP))
    for op, c in ops.items():
        key = f"op:{op}" if op in OP_VOCAB else "op:other"
        f[col[key]] += c
    level: dict[str, int] = {}
    for n in nx.topological_sort(g) if nx.is_directed_acyclic_graph(g) else sorted(g.nodes):
        preds = [level[p] for p in g.predecessors(n) if p in level]
        level[n] = 1 + max(preds) if preds else 0
    widths = Counter(level.values())
    graph_vals = {
        "nodes": sum(ops.values()), "edges": g.number_of_edges(), "depth": max(level.values(), default=0),
        "width_max": max(widths.values(), default=0),
        "width_mean": (sum(widths.values()) / len(widths)) if widths else 0.0,
        "branches": sum(1 for n in g if g.out_degree(n) > 1), "merges": sum(1 for n in g if g.in_degree(n) > 1),
        "inputs": sum(1 for _, d in g.nodes(data=True) if d["op"] == INPUT_OP),
        "outputs": sum(1 for _, d in g.nodes(data=True) if d["op"] == OUTPUT_OP),
    }
    for k, v in graph_vals.items():
        f[col[f"graph:{k}"]] = v
    acts = [numel(list(d["shape"])) for _, d in g.nodes(data=True) if d["shape"] is not None]
    acts = [a for a in acts if a is not None]
    convs = [d for _, d in g.nodes(data=True) if d["op"] in _CONV_OPS]
    chans = [float(c) for _, d in g.nodes(data=True) for c in (d["cin"], d["cout"]) if c]
    macs_total = g.graph["macs"]
    conv_macs = sum(d["macs"] for d in convs)
    mm_macs = sum(d["macs"] for _, d in g.nodes(data=True) if d["op"] in _MATMUL_OPS)
    cost_vals = {
        "params": g.graph["params"], "macs": macs_total, "bytes": g.graph["bytes"],
        "act_sum": sum(acts), "act_max": max(acts, default=0),
        "conv_k1": sum(1 for d in convs if d["kernel"] and max(d["kernel"]) == 1),
        "conv_k3": sum(1 for d in convs if d["kernel"] and max(d["kernel"]) in (2, 3)),
        "conv_k5plus": sum(1 for d in convs if d["kernel"] and max(d["kernel"]) >= 4),
        "conv_strided": sum(1 for d in convs if d["stride"] and max(d["stride"]) > 1),
        "conv_grouped": sum(1 for d in convs if d["group"] and d["group"] > 1),
        "channels_max": max(chans, default=0.0),
        "channels_mean": float(np.mean(chans)) if chans else 0.0,
        "mac_ops": sum(1 for _, d in g.nodes(data=True) if d["macs"] > 0),
    }
    for k, v in cost_vals.items():
        f[col[f"cost:{k}"]] = v
    f[: col["cost:conv_mac_share"]] = [_log(v) for v in f[: col["cost:conv_mac_share"]]]
    f[col["cost:conv_mac_share"]] = conv_macs / macs_total if macs_total else 0.0
    f[col["cost:matmul_mac_share"]] = mm_macs / macs_total if macs_total else 0.0
    wl0 = col["wl:0"]
    counts = np.zeros(WL_BUCKETS)
    for labels in wl_labels(g):
        for lab in labels:
            counts[_bucket(lab)] += 1
    f[wl0:] = np.log1p(counts)
    return f.astype(np.float32)


# ---- (c) the text ----------------------------------------------------------------------------------


def _dims(shape: tuple[int | None, ...] | None) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) if shape else "?"


def graph_text(g: nx.DiGraph) -> str:
    """ONNX-Net-style words per node: ``n4 Conv kernel 3x3 stride 1 channels 8 to 16 from n2 shape 1x16x16x16``."""
    names = {n: n for n in g}
    lines = []
    for n in sorted(g.nodes, key=lambda v: (g.nodes[v]["index"], v)):
        d = g.nodes[n]
        words = [n, d["op"]]
        if d["kernel"]:
            words += ["kernel", "x".join(map(str, d["kernel"]))]
        if d["stride"]:
            words += ["stride", "x".join(map(str, d["stride"]))]
        if d["group"] and d["group"] > 1:
            words += ["groups", str(d["group"])]
        if d["cin"] or d["cout"]:
            words += ["channels", str(d["cin"] or "?"), "to", str(d["cout"] or "?")]
        preds = sorted(g.predecessors(n), key=lambda v: (g.nodes[v]["index"], v))
        if preds:
            words += ["from", *(names[p] for p in preds)]
        words += ["shape", _dims(d["shape"])]
        lines.append(" ".join(words))
    lines.append(f"params {g.graph['params']} macs {g.graph['macs']} bytes {g.graph['bytes']}")
    return "\n".join(lines)
