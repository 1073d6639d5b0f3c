"""ONNX hand-off: export with parity check, graph costs, onnxruntime sessions and latency, quantization.

``policy`` (a quantization policy applied and measured) and ``task_costs`` (each task's path) are imported from
their modules."""

from nasmtl.onnx.export import ExportResult, ParityResult, check_parity, export_onnx
from nasmtl.onnx.graph import (GraphStats, OnnxError, ParityError, PathLike, as_model, compact_onnx, compacted,
                               graph_stats, load_onnx, shipped_bytes)
from nasmtl.onnx.metadata import (copy_metadata, describe_metadata, model_metadata, nasmtl_metadata, onnx_io,
                                  read_metadata, write_metadata)
from nasmtl.onnx.quantize import PRECISIONS, Precision, QuantResult, quantizable_nodes, quantize
from nasmtl.onnx.runtime import Latency, measure_latency, run_onnx, session

__all__ = [
    "PRECISIONS",
    "ExportResult",
    "GraphStats",
    "Latency",
    "OnnxError",
    "ParityError",
    "ParityResult",
    "PathLike",
    "Precision",
    "QuantResult",
    "as_model",
    "check_parity",
    "compact_onnx",
    "compacted",
    "copy_metadata",
    "describe_metadata",
    "export_onnx",
    "graph_stats",
    "load_onnx",
    "measure_latency",
    "model_metadata",
    "nasmtl_metadata",
    "onnx_io",
    "quantizable_nodes",
    "quantize",
    "read_metadata",
    "run_onnx",
    "session",
    "shipped_bytes",
    "write_metadata",
]
