"""Per-node mixed-precision quantization of an exported ONNX model with onnxruntime's quantization tools.

Precisions: ``int4_weight`` (block-wise 4-bit weights, ``MatMulNBits``, MatMul/Gemm only), ``int8_static``
(QDQ, calibrated, per-channel weights; activations and pooling wholly between int8 nodes are quantized
too, so the tensor stays int8 from one layer to the next), ``int8_dynamic`` (``ConvInteger``/``MatMulInteger``,
activations quantized at run time). Passes run in that order on the intermediate model; a node named ``N`` stays
traceable as ``N`` (static), ``N_Q4`` (int4) or ``N_quant`` (dynamic), see ``QuantResult.renamed``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nasmtl.errors import typed_line
from nasmtl.files import write_atomic
from nasmtl.onnx.graph import OnnxError, PathLike, load_onnx
from nasmtl.onnx.runtime import run_onnx, session

Precision = Literal["fp32", "int8_static", "int8_dynamic", "int4_weight"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
QUANTIZABLE_OPS: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
CALIBRATION_SAMPLES = 64
CALIBRATION_BATCH = 16
INT4_BLOCK_SIZE = 32
_PASS_ORDER: tuple[str, ...] = ("int4_weight", "int8_static", "int8_dynamic")
INT8_INTERIOR_OPS: frozenset[str] = frozenset(
    {"Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Squeeze", "Unsqueeze"}
)
"""Weightless ops that int8 static also quantizes where they sit wholly between int8 nodes (``_int8_interior``)."""


@dataclass
class QuantResult:
    """Where the quantized model went, the precision each quantizable node got (``fp32`` if none), skips and why."""

    path: Path
    applied: dict[str, str]
    skipped: dict[str, str]
    seconds: float
    renamed: dict[str, str] = field(default_factory=dict)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a deterministic name (op type and position) so policies can address them."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def quantizable_nodes(model_path: PathLike) -> list[tuple[str, str]]:
    """(node name, op type) of the Conv, Gemm and MatMul nodes a policy may assign a precision to."""
    model = load_onnx(model_path)
    _name_nodes(model)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    """Attributes of a node as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers by name."""
    return {t.name: t for t in model.graph.initializer}


def _gemm_is_linear(node: onnx.NodeProto) -> bool:
    """Whether a Gemm is ``A @ op(B) + C`` (alpha = beta = 1, A not transposed), so it can become MatMul + Add."""
    a = _attrs(node)
    return float(a.get("alpha", 1.0)) == 1.0 and float(a.get("beta", 1.0)) == 1.0 and int(a.get("transA", 0)) == 0


def _gemm_to_matmul(model: onnx.ModelProto, names: set[str] | None) -> None:
    """Rewrite linear Gemm nodes (those in ``names``, or all) as MatMul (same name) + Add, transposing B once."""
    inits = _initializers(model)
    users: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            users[i] = users.get(i, 0) + 1
    transposed: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or (names is not None and node.name not in names) or not _gemm_is_linear(node):
            new_nodes.append(node)
            continue
        b = node.input[1]
        if int(_attrs(node).get("transB", 0)):
            if b in inits:
                if b not in transposed:
                    t_name = _fresh(model, b + "_T")
                    arr = numpy_helper.to_array(inits[b]).T.copy()
                    model.graph.initializer.append(numpy_helper.from_array(arr, t_name))
                    inits[t_name] = model.graph.initializer[-1]
                    transposed[b] = t_name
                b_in = transposed[b]
            else:
                b_in = _fresh(model, b + "_T")
                new_nodes.append(helper.make_node("Transpose", [b], [b_in], name=node.name + "/transB"))
        else:
            b_in = b
        has_bias = len(node.input) > 2 and bool(node.input[2])
        mm_out = _fresh(model, node.output[0] + "_matmul") if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], b_in], [mm_out], name=node.name))
        if has_bias:
            new_nodes.append(
                helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "/bias")
            )
    model.graph.ClearField("node")
    model.graph.node.extend(new_nodes)
    still_used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in still_used]
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(keep)


def _fresh(model: onnx.ModelProto, base: str) -> str:
    """A tensor name not used anywhere in the graph."""
    taken = {t.name for t in model.graph.initializer}
    taken |= {x for n in model.graph.node for x in (*n.input, *n.output)}
    taken |= {v.name for v in (*model.graph.input, *model.graph.output, *model.graph.value_info)}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _weight_2d(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Whether input B of a MatMul/Gemm is a constant initializer usable as a 2-D weight matrix."""
    inits = _initializers(model)
    if len(node.input) < 2 or node.input[1] not in inits:
        return False
    dims = list(inits[node.input[1]].dims)
    return len(dims) == 2 or (len(dims) > 2 and all(d == 1 for d in dims[:-2]))


def _check_support(
    model: onnx.ModelProto, node: onnx.NodeProto, precision: str, calibration: np.ndarray | None
) -> str | None:
    """Why this op/precision pair cannot be applied, or None when it can."""
    op = node.op_type
    if precision == "int4_weight":
        if op not in ("MatMul", "Gemm"):
            return f"int4_weight is weight-only MatMulNBits: supports MatMul/Gemm, not {op}"
        if op == "Gemm" and not _gemm_is_linear(node):
            return "int4_weight: Gemm with alpha/beta != 1 or transA cannot be rewritten as MatMul"
        if not _weight_2d(model, node):
            return "int4_weight needs a constant 2-D weight (input B is an activation or not 2-D)"
    elif precision == "int8_static":
        if calibration is None or len(calibration) == 0:
            return "int8_static needs calibration data (none given)"
    elif precision == "int8_dynamic":
        if op == "Gemm" and not _gemm_is_linear(node):
            return "int8_dynamic: Gemm with alpha/beta != 1 or transA cannot be rewritten as MatMul"
        if op in ("MatMul", "Gemm") and (len(node.input) < 2 or node.input[1] not in _initializers(model)):
            return "int8_dynamic quantizes MatMul/Gemm with a constant weight only (input B is an activation)"
    return None


class _Reader:
    """onnxruntime CalibrationDataReader over the given samples in batches of CALIBRATION_BATCH."""

    def __init__(self, input_name: str, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._batches = [{input_name: x[i : i + CALIBRATION_BATCH]} for i in range(0, len(x), CALIBRATION_BATCH)]
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Next calibration batch, None when done."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start over (used by some calibrators)."""
        self._it = iter(self._batches)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's log warnings and Python warnings during the passes."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _pass_int4(src: Path, dst: Path, nodes: list[str], all_matmuls: list[str], calibration: np.ndarray | None) -> None:
    """Block-wise 4-bit weight-only quantization of the named MatMul nodes (others excluded)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    keep = set(nodes)
    q = MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=4,
        block_size=INT4_BLOCK_SIZE,
        is_symmetric=False,
        nodes_to_exclude=[n for n in all_matmuls if n not in keep],
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",),
    )
    q.process()
    onnx.save_model(q.model.model, str(dst))


def _int8_interior(model: onnx.ModelProto, nodes: list[str]) -> list[str]:
    """Weightless nodes (``INT8_INTERIOR_OPS``) lying wholly between the named int8 nodes.

    A node is interior when every input it reads from another node comes from a named or interior
    node and every consumer of its outputs is one too (graph outputs excluded). Quantizing those as
    well keeps the tensor int8 from one quantized layer to the next, instead of a Dequantize/Quantize
    pair around each activation or pooling. Nodes outside the named ones never change precision.
    """
    named = set(nodes)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    outputs = {o.name for o in model.graph.output}
    inner: set[str] = set()
    for n in model.graph.node:
        feeds = [producer[i] for i in n.input if i in producer]
        if n.op_type in INT8_INTERIOR_OPS and feeds and all(f in named or f in inner for f in feeds):
            inner.add(n.name)
    by_name = {n.name: n for n in model.graph.node}
    changed = True
    while changed:
        changed = False
        for name in sorted(inner):
            outs = by_name[name].output
            if any(o in outputs for o in outs) or not all(
                c in named or c in inner for o in outs for c in consumers.get(o, [])
            ):
                inner.discard(name)
                changed = True
    return [n.name for n in model.graph.node if n.name in inner]


def _pass_static(
    src: Path, dst: Path, nodes: list[str], all_matmuls: list[str], calibration: np.ndarray | None
) -> None:
    """int8 QDQ static quantization (uint8 activations, per-channel uint8 weights) of the named nodes and of
    the weightless nodes between them (``_int8_interior``).

    Weights are uint8, not int8: onnxruntime fuses QDQ pairs into QLinearMatMul/QLinearConv, and its x86
    u8 x s8 kernels without VNNI add products pairwise in int16, which saturates on full-range values (an
    attention block came out 30 % off on such a CPU, exact on another). u8 x u8 has no such path.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    assert calibration is not None
    model = onnx.load(str(src), load_external_data=False)
    input_name = model.graph.input[0].name
    nodes = [*nodes, *_int8_interior(model, nodes)]
    quantize_static(
        str(src),
        str(dst),
        _Reader(input_name, calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QUInt8,
        nodes_to_quantize=nodes,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _pass_dynamic(
    src: Path, dst: Path, nodes: list[str], all_matmuls: list[str], calibration: np.ndarray | None
) -> None:
    """int8 dynamic quantization (ConvInteger/MatMulInteger) of the named nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


_PASSES: dict[str, Callable[[Path, Path, list[str], list[str], np.ndarray | None], None]] = {
    "int4_weight": _pass_int4,
    "int8_static": _pass_static,
    "int8_dynamic": _pass_dynamic,
}


def _applied_as(model: onnx.ModelProto, name: str, precision: str) -> str | None:
    """The node name that carries ``precision`` for original node ``name`` in ``model``, or None if not applied."""
    by_name = {n.name: n for n in model.graph.node}
    if precision == "int4_weight":
        node = by_name.get(name + "_Q4")
        return node.name if node is not None and node.op_type == "MatMulNBits" else None
    if precision == "int8_dynamic":
        node = by_name.get(name + "_quant")
        return node.name if node is not None and node.op_type in ("ConvInteger", "MatMulInteger") else None
    node = by_name.get(name)
    if node is None:
        return None
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return name if any(i in dq_outputs for i in node.input[:2]) else None


def _test_input(model: onnx.ModelProto, calibration: np.ndarray | None) -> np.ndarray | None:
    """Two samples to smoke-test a model: from the calibration data, or random at the declared input shape."""
    if calibration is not None and len(calibration):
        return np.asarray(calibration[:2], dtype=np.float32)
    dims = model.graph.input[0].type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") for d in dims):
        return None
    shape = tuple(d.dim_value for d in dims)
    return np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)


def _smoke(path: Path, x: np.ndarray | None) -> None:
    """Check the model with onnx's checker and run it once in onnxruntime; raises on failure."""
    onnx.checker.check_model(str(path))
    if x is not None:
        run_onnx(session(path), x)


def _checked_calibration(model: onnx.ModelProto, calibration: np.ndarray, where: Path) -> np.ndarray:
    """Calibration samples as float32, rejected (ValueError) when they do not fit the model's input shape."""
    x = np.asarray(calibration, dtype=np.float32)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    want = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    fits = x.ndim == len(want) and all(w is None or w == c for w, c in zip(want[1:], x.shape[1:], strict=True))
    if not fits:
        raise ValueError(f"{where}: calibration shape {x.shape} does not match the model input {want}")
    return x


def quantize(
    model_path: PathLike,
    out_path: PathLike,
    policy: Mapping[str, Precision],
    *,
    calibration: np.ndarray | None = None,
    default: Precision = "fp32",
    calibration_samples: int = CALIBRATION_SAMPLES,
) -> QuantResult:
    """Quantize each Conv/Gemm/MatMul node at its policy precision (unnamed nodes: ``default``); unsupported
    combinations are skipped with a reason, and ``out_path`` is written only once the result checks and runs.
    Static int8 calibrates on the first ``calibration_samples`` rows of ``calibration``."""
    t0 = time.perf_counter()
    model_path, out_path = Path(model_path), Path(out_path)
    for prec in (*policy.values(), default):
        if prec not in PRECISIONS:
            raise ValueError(f"unknown precision {prec!r}; expected one of {PRECISIONS}")
    model = load_onnx(model_path)
    _name_nodes(model)
    by_name = {n.name: n for n in model.graph.node}
    skipped: dict[str, str] = {}
    for name, prec in policy.items():
        if name not in by_name:
            skipped[name] = f"no node named {name!r} in {model_path}"
        elif by_name[name].op_type not in QUANTIZABLE_OPS and prec != "fp32":
            skipped[name] = f"{by_name[name].op_type} is not quantizable (only {', '.join(QUANTIZABLE_OPS)})"
    if calibration_samples < 1:
        raise ValueError(f"calibration_samples must be >= 1, got {calibration_samples}")
    if calibration is not None:
        calibration = _checked_calibration(model, calibration, model_path)[:calibration_samples]
    original = [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]
    plan: dict[str, list[str]] = {p: [] for p in _PASS_ORDER}
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE_OPS:
            continue
        prec = policy.get(node.name, default)
        if prec == "fp32":
            continue
        reason = _check_support(model, node, prec, calibration)
        if reason is not None:
            skipped[node.name] = reason
        else:
            plan[prec].append(node.name)
    if plan["int8_dynamic"]:
        _gemm_to_matmul(model, None)
    elif plan["int4_weight"]:
        _gemm_to_matmul(model, set(plan["int4_weight"]))
    applied: dict[str, str] = {}
    renamed: dict[str, str] = {}
    x_test = _test_input(model, calibration)
    with tempfile.TemporaryDirectory(prefix="nasmtl-quant-") as tmp, _quiet():
        current = Path(tmp) / "stage0.onnx"
        onnx.save_model(model, str(current))
        for k, prec in enumerate(_PASS_ORDER, start=1):
            nodes = plan[prec]
            if not nodes:
                continue
            nxt = Path(tmp) / f"stage{k}.onnx"
            matmuls = [n.name for n in onnx.load(str(current)).graph.node if n.op_type == "MatMul"]
            try:
                _PASSES[prec](current, nxt, nodes, matmuls, calibration)
                _smoke(nxt, x_test)
            except Exception as exc:
                for name in nodes:
                    skipped[name] = f"{prec} pass failed ({typed_line(exc)})"
                continue
            result = onnx.load(str(nxt))
            for name in nodes:
                carrier = _applied_as(result, name, prec)
                if carrier is None:
                    skipped[name] = f"onnxruntime's {prec} quantizer left the node unchanged"
                else:
                    applied[name] = prec
                    if carrier != name:
                        renamed[name] = carrier
            current = nxt
        for name in original:
            applied.setdefault(name, "fp32")
        try:
            _smoke(current, x_test)
        except Exception as exc:
            raise OnnxError(f"{out_path}: quantized model does not run ({typed_line(exc)})") from None
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out_path, current.read_bytes())
    return QuantResult(
        path=out_path, applied=applied, skipped=skipped, seconds=time.perf_counter() - t0, renamed=renamed
    )
