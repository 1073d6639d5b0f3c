"""onnxruntime sessions, batched inference and latency measurement on CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from nasmtl.errors import typed_line
from nasmtl.onnx.graph import OnnxError, PathLike, load_onnx

SessionSource = PathLike | bytes | onnx.ModelProto

_ORT_TYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@lru_cache(maxsize=16)
def _options(threads: int) -> ort.SessionOptions:
    """Session options shared by all sessions with this thread count: sequential, all graph optimizations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def session(path_or_bytes: SessionSource, threads: int = 1) -> ort.InferenceSession:
    """A CPU InferenceSession for a file, serialized bytes or ModelProto; load failures become OnnxError."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = _options(int(threads))
    providers = ["CPUExecutionProvider"]
    if isinstance(path_or_bytes, onnx.ModelProto):
        source: str | bytes = path_or_bytes.SerializeToString()
        where = "<model>"
    elif isinstance(path_or_bytes, (bytes, bytearray)):
        source, where = bytes(path_or_bytes), "<bytes>"
    else:
        where = str(path_or_bytes)
        if not Path(where).is_file():
            load_onnx(where)
        source = where
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=providers)
    except Exception as exc:
        if isinstance(source, str):
            load_onnx(source)
        raise OnnxError(f"{where}: onnxruntime cannot load the model ({typed_line(exc)})") from None


def _as_session(path_or_session: SessionSource | ort.InferenceSession, threads: int = 1) -> ort.InferenceSession:
    """Reuse a given session or open one."""
    if isinstance(path_or_session, ort.InferenceSession):
        return path_or_session
    return session(path_or_session, threads=threads)


def _where(sess: ort.InferenceSession) -> str:
    """The file a session was opened from, for messages."""
    return getattr(sess, "_model_path", None) or "<in-memory model>"


def _input_dtype(sess: ort.InferenceSession) -> type:
    """numpy dtype of the session's first input."""
    return _ORT_TYPES.get(sess.get_inputs()[0].type, np.float32)


def run_onnx(
    path_or_session: SessionSource | ort.InferenceSession, x: np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Run the model on ``x`` in batches; returns output name -> concatenated array."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sess = _as_session(path_or_session)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise OnnxError(f"{_where(sess)}: model has {len(inputs)} inputs ({[i.name for i in inputs]}); expected one")
    in_name = inputs[0].name
    names = [o.name for o in sess.get_outputs()]
    dtype = _input_dtype(sess)
    x = x if hasattr(x, "ndim") and hasattr(x, "__getitem__") else np.asarray(x)   # arrays or Rows, read per batch
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    starts = range(0, max(len(x), 1), batch_size) if x.ndim else [0]
    for start in starts:
        xb = np.ascontiguousarray(x[start : start + batch_size] if x.ndim else x, dtype=dtype)
        try:
            outs = sess.run(names, {in_name: xb})
        except Exception as exc:
            raise OnnxError(
                f"{_where(sess)}: onnxruntime run failed on input of shape {xb.shape} ({typed_line(exc)})"
            ) from None
        for n, o in zip(names, outs, strict=True):
            chunks[n].append(o)
    return {n: (np.concatenate(c, axis=0) if len(c) > 1 else c[0]) for n, c in chunks.items()}


@dataclass
class Latency:
    """Wall-clock latency of repeated single runs in onnxruntime."""

    median_ms: float
    p90_ms: float
    runs: int
    threads: int


def _model_input_shape(sess: ort.InferenceSession) -> tuple[int, ...]:
    """The per-sample input shape (batch dim dropped) declared by the model."""
    shape = sess.get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise OnnxError(f"{_where(sess)}: input shape {shape} is not static; pass input_shape")
    return tuple(int(d) for d in shape)


def measure_latency(
    path_or_session: SessionSource | ort.InferenceSession,
    input_shape: tuple[int, ...] | None = None,
    *,
    batch: int = 1,
    warmup: int = 10,
    runs: int = 50,
    threads: int = 1,
    seed: int = 0,
) -> Latency:
    """Median and 90th percentile of ``runs`` timed runs after ``warmup`` untimed ones, on random input."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    sess = _as_session(path_or_session, threads=threads)
    if isinstance(path_or_session, ort.InferenceSession):
        threads = path_or_session.get_session_options().intra_op_num_threads or threads
    shape = tuple(input_shape) if input_shape is not None else _model_input_shape(sess)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape)).astype(_input_dtype(sess))
    feed = {sess.get_inputs()[0].name: x}
    names = [o.name for o in sess.get_outputs()]
    try:
        for _ in range(max(warmup, 0)):
            sess.run(names, feed)
        times = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            t0 = time.perf_counter()
            sess.run(names, feed)
            times[i] = time.perf_counter() - t0
    except Exception as exc:
        raise OnnxError(f"{_where(sess)}: onnxruntime run failed on input of shape {x.shape} "
                        f"({typed_line(exc)})") from None
    return Latency(
        median_ms=float(np.median(times) * 1e3),
        p90_ms=float(np.percentile(times, 90) * 1e3),
        runs=runs,
        threads=int(threads),
    )
