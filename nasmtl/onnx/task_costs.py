"""Costs that understand layouts: the whole network (all tasks at once) and each task alone.

A task's path is everything from the input to its head; with a branched layout it includes the
shared stages and its own group's copies only. ``onnx_task_costs`` cuts that path out of the
exported ONNX file (``onnx.utils.extract_model``) and measures it like a whole model: params,
MACs and bytes of the graph, and latency in onnxruntime when asked. ``nasmtl.arch.compose.task_costs``
gives the same params and MACs from the IR before anything is trained.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import onnx
import onnx.utils

from nasmtl.errors import typed_line
from nasmtl.onnx.graph import OnnxError, PathLike
from nasmtl.onnx.runtime import measure_latency

TASK_COSTS = ("params", "macs", "bytes", "latency_ms")
"""The per-task cost names: objective ``left.macs`` is the MACs of running task ``left`` alone."""


def extract_task(onnx_path: PathLike, task: str, out_path: PathLike) -> Path:
    """Write the sub-model of ``onnx_path`` that computes output ``task`` only."""
    src, out = Path(onnx_path), Path(out_path)
    model = onnx.load(str(src), load_external_data=False)
    outputs = [o.name for o in model.graph.output]
    if task not in outputs:
        raise OnnxError(f"{src}: no output {task!r} (outputs: {', '.join(outputs)})")
    inputs = [i.name for i in model.graph.input]
    try:
        onnx.utils.extract_model(str(src), str(out), inputs, [task], check_model=True)
    except Exception as e:
        raise OnnxError(f"{src}: cannot cut out the path of task {task!r} ({typed_line(e)})") from None
    return out


def onnx_task_costs(onnx_path: PathLike, tasks: Sequence[str], latency_runs: int = 0,
                    threads: int = 1) -> dict[str, dict[str, float]]:
    """``{task: {"params", "macs", "bytes"[, "latency_ms"]}}`` of each task's path in an ONNX file."""
    from nasmtl.onnx import graph_stats

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="nasmtl-task-") as tmp:
        for task in tasks:
            sub = extract_task(onnx_path, task, Path(tmp) / f"{task}.onnx")
            stats = graph_stats(sub)
            vals = {"params": float(stats.params), "macs": float(stats.macs), "bytes": float(stats.bytes)}
            if latency_runs > 0:
                vals["latency_ms"] = measure_latency(sub, runs=latency_runs, warmup=3, threads=threads).median_ms
            out[task] = vals
    return out
