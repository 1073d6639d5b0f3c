"""Applying a quantization policy to an exported model and measuring the result in onnxruntime.

Layer groups of an ONNX file are read off its node names: composed models (``nasmtl.arch.compose``)
name stage copies ``s{stage}.{group}.{node}``, which torchscript export turns into node names with a
path component ``s{stage}_...`` (e.g. ``/model/s1_left_conv_5/Conv``). Rules:

- a node whose name has a component ``s{i}_...`` belongs to group ``min(i, n_groups - 1)``;
- nodes without a stage (task heads, pooling before them) belong to the last group;
- a model with no stage name at all is one group: all its nodes are group 0.

A group's precision applies to each of its Conv/Gemm/MatMul nodes; a composite precision
(``int4_int8``) resolves per node by op type (``node_precision``). Metrics come from running the
model in onnxruntime on a data split, never from torch or estimates.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx

from nasmtl.data import MultiTaskDataset, Split, Task
from nasmtl.errors import typed_line
from nasmtl.onnx.graph import OnnxError, PathLike, load_onnx, shipped_bytes
from nasmtl.onnx.metadata import copy_metadata
from nasmtl.onnx.quantize import PRECISIONS as ONNX_PRECISIONS
from nasmtl.onnx.quantize import quantizable_nodes, quantize
from nasmtl.onnx.runtime import measure_latency, run_onnx, session
from nasmtl.spaces.quant import BASIC_PRECISIONS, COMPOSITE_PRECISIONS, DEFAULT_CALIBRATION_SAMPLES, QuantPolicy

assert BASIC_PRECISIONS == ONNX_PRECISIONS, "nasmtl.spaces.quant and nasmtl.onnx.quantize disagree on precisions"

_STAGE = re.compile(r"^s(\d+)_")


@dataclass
class QuantApplied:
    """A quantized file: precision each quantizable node got, nodes skipped with reasons, groups and bytes."""

    path: Path
    policy: QuantPolicy
    applied: dict[str, str]
    skipped: dict[str, str]
    groups: dict[str, int]
    bytes: int
    seconds: float
    renamed: dict[str, str] = field(default_factory=dict)

    def by_group(self) -> dict[int, dict[str, int]]:
        """Per group, how many nodes got each precision (for reports)."""
        out: dict[int, dict[str, int]] = {}
        for node, g in self.groups.items():
            prec = self.applied.get(node, "fp32")
            out.setdefault(g, {}).setdefault(prec, 0)
            out[g][prec] += 1
        return out


@dataclass
class PolicyMeasurement:
    """One quantized model measured: ``values`` holds ``task.metric``, ``bytes`` and ``latency_ms``."""

    quant: QuantApplied
    values: dict[str, float]


def _stage_of(name: str) -> int | None:
    """The stage index in a node name (a path component ``s{i}_...``), or None."""
    for part in name.split("/"):
        m = _STAGE.match(part)
        if m:
            return int(m.group(1))
    return None


def layer_groups(onnx_path: PathLike, n_groups: int) -> dict[str, int]:
    """Layer group of every quantizable (Conv/Gemm/MatMul) node, by the rules in the module docstring."""
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    nodes = [name for name, _ in quantizable_nodes(onnx_path)]
    stages = {name: _stage_of(name) for name in nodes}
    if all(s is None for s in stages.values()):
        return {name: 0 for name in nodes}
    last = n_groups - 1
    return {name: last if s is None else min(s, last) for name, s in stages.items()}


def node_precision(precision: str, op_type: str) -> str:
    """The quantizer precision of one node of ``op_type`` at a policy precision (composites resolved by op)."""
    return COMPOSITE_PRECISIONS.get(precision, {}).get(op_type, precision)


def node_policy(onnx_path: PathLike, policy: QuantPolicy) -> dict[str, str]:
    """The quantizer precision of every quantizable node under ``policy`` (its group's, resolved by op type)."""
    ops = dict(quantizable_nodes(onnx_path))
    return {name: node_precision(policy.precision(g), ops[name])
            for name, g in layer_groups(onnx_path, policy.n_groups).items()}


def apply_policy(fp32_path: PathLike, out_path: PathLike, policy: QuantPolicy, calibration: np.ndarray | None,
                 calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES) -> QuantApplied:
    """Quantize an fp32 ONNX file group by group; the result is checked with onnx's checker and run once.

    The fp32 file's ``metadata_props`` (``nasmtl.onnx.metadata``) are copied into the quantized file.

    Unsupported node/precision pairs are skipped with their reason. Should the combined model fail to
    run, the fp32 model is written instead and every node it would have changed is recorded as skipped.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    groups = layer_groups(fp32_path, policy.n_groups)
    per_node = node_policy(fp32_path, policy)
    try:
        res = quantize(fp32_path, out_path, per_node, calibration=calibration, calibration_samples=calibration_samples)
        applied, skipped, seconds, renamed = res.applied, res.skipped, res.seconds, res.renamed
    except OnnxError as exc:
        reason = f"quantized model failed, kept fp32 ({typed_line(exc)})"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fp32_path, out_path)
        applied = {n: "fp32" for n in groups}
        skipped = {n: reason for n, p in per_node.items() if p != "fp32"}
        seconds, renamed = float("nan"), {}
    else:
        copy_metadata(fp32_path, out_path)
    onnx.checker.check_model(str(out_path))
    return QuantApplied(path=out_path, policy=policy, applied=applied, skipped=skipped, groups=groups,
                        bytes=out_path.stat().st_size, seconds=seconds, renamed=renamed)


def _split(data: MultiTaskDataset, split: str) -> Split:
    """The named split of a data set, or a one-line ValueError."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return getattr(data, split)


def evaluate_onnx(onnx_path: PathLike, data: MultiTaskDataset, split: str = "val", batch_size: int = 256,
                  tasks: Sequence[Task] | None = None) -> dict[str, float]:
    """Per-task metrics ``{"task.metric": value}`` of the model run in onnxruntime on one split."""
    part = _split(data, split)
    tasks = tuple(tasks) if tasks is not None else data.tasks
    outs = run_onnx(session(onnx_path), part.x, batch_size=batch_size)
    missing = [t.name for t in tasks if t.name not in outs]
    if missing:
        raise OnnxError(f"{onnx_path}: model has no output(s) {', '.join(missing)} (outputs: {', '.join(outs)})")
    values: dict[str, float] = {}
    for t in tasks:
        for metric, v in t.metrics(outs[t.name], part.y[t.name]).items():
            values[f"{t.name}.{metric}"] = float(v)
    return values


def mean_primary(values: Mapping[str, float], tasks: Sequence[Task]) -> float:
    """Mean over tasks of each task's primary metric (e.g. mean accuracy)."""
    return float(np.mean([values[f"{t.name}.{t.primary_metric}"] for t in tasks]))


def measure_onnx(onnx_path: PathLike, data: MultiTaskDataset, split: str = "val", latency_runs: int = 20,
                 threads: int = 1) -> dict[str, float]:
    """Metrics on ``split``, bytes as shipped (``compacted``) and latency (batch 1, median of ``latency_runs``) of one file."""
    values = evaluate_onnx(onnx_path, data, split)
    values["bytes"] = float(shipped_bytes(onnx_path))
    if latency_runs > 0:
        values["latency_ms"] = measure_latency(onnx_path, runs=latency_runs, warmup=3, threads=threads).median_ms
    return values


def measure_policy(fp32_path: PathLike, out_path: PathLike, policy: QuantPolicy, calibration: np.ndarray | None,
                   data: MultiTaskDataset, split: str = "val", latency_runs: int = 20, threads: int = 1,
                   calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES) -> PolicyMeasurement:
    """Apply ``policy`` to an fp32 file and measure the quantized file (``measure_onnx``)."""
    quant = apply_policy(fp32_path, out_path, policy, calibration, calibration_samples)
    return PolicyMeasurement(quant, measure_onnx(quant.path, data, split, latency_runs, threads))


def baselines(fp32_path: PathLike, calibration: np.ndarray | None, data: MultiTaskDataset,
              out_dir: PathLike | None = None, split: str = "val", latency_runs: int = 20,
              threads: int = 1) -> dict[str, dict[str, float]]:
    """The same trained model in fp32 and quantized all to int8 static: ``{"fp32": values, "int8": values}``.

    The int8 file goes to ``out_dir`` (default: beside the fp32 file) as ``NAME.int8.onnx``.
    """
    fp32_path = Path(fp32_path)
    load_onnx(fp32_path)
    folder = Path(out_dir) if out_dir is not None else fp32_path.parent
    int8_path = folder / f"{fp32_path.stem}.int8.onnx"
    int8 = measure_policy(fp32_path, int8_path, QuantPolicy.uniform("int8_static"), calibration, data, split,
                          latency_runs, threads)
    return {"fp32": measure_onnx(fp32_path, data, split, latency_runs, threads), "int8": int8.values}

