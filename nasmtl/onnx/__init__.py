"""ONNX hand-off: export with parity check, graph costs, onnxruntime sessions and latency, quantization."""

from nasmtl.onnx.export import ExportResult, ParityResult, check_parity, export_onnx
from nasmtl.onnx.graph import (GraphStats, OnnxError, ParityError, compact_onnx, compacted, graph_stats, load_onnx,
                               shipped_bytes)
from nasmtl.onnx.metadata import model_metadata, read_metadata, write_metadata
from nasmtl.onnx.quantize import Precision, QuantResult, quantizable_nodes, quantize
from nasmtl.onnx.runtime import Latency, measure_latency, run_onnx, session

__all__ = [
    "ExportResult",
    "GraphStats",
    "Latency",
    "OnnxError",
    "ParityError",
    "ParityResult",
    "Precision",
    "QuantResult",
    "check_parity",
    "compact_onnx",
    "compacted",
    "export_onnx",
    "graph_stats",
    "load_onnx",
    "measure_latency",
    "model_metadata",
    "quantizable_nodes",
    "quantize",
    "read_metadata",
    "run_onnx",
    "session",
    "shipped_bytes",
    "write_metadata",
]
