"""torch multi-task model -> ONNX (one named output per task, dynamic batch) and torch/onnxruntime parity."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from nasmtl.errors import typed_line
from nasmtl.onnx.graph import OnnxError, ParityError, PathLike, load_onnx
from nasmtl.onnx.metadata import MetaValue, write_metadata
from nasmtl.onnx.runtime import run_onnx, session

Exporter = Literal["torchscript", "dynamo"]
INPUT_NAME = "input"
BATCH_DIM = "batch"


@dataclass
class ExportResult:
    """Where an export went, how long it took and which exporter made it."""

    path: Path
    seconds: float
    exporter: str


class _TupleOutputs(nn.Module):
    """Wraps a dict-returning model so it returns a tuple in a fixed task order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def _sample_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A seeded random batch of two (not one, so tracing does not specialise the batch dim) on the model's device."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    return torch.randn((2, *input_shape), generator=gen).to(device)


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: PathLike,
    output_names: Sequence[str] | None = None,
    *,
    opset: int = 17,
    exporter: Exporter = "torchscript",
    metadata: Mapping[str, MetaValue] | None = None,
) -> ExportResult:
    """Export ``model`` (eval mode) to ``path`` with input ``input``, one output per task and a dynamic batch axis.

    ``metadata`` goes into the file's ``metadata_props`` (``nasmtl.onnx.metadata``; e.g. ``model_metadata(data)``).
    """
    path = Path(path)
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    model.eval()
    x = _sample_input(model, tuple(input_shape))
    t0 = time.perf_counter()
    with torch.no_grad():
        try:
            trial = model(x)
        except Exception as exc:
            raise OnnxError(f"{path}: model forward failed on input of shape {tuple(x.shape)} "
                            f"({typed_line(exc)})") from exc
    if not isinstance(trial, dict) or not trial:
        raise OnnxError(
            f"{path}: model must return a non-empty dict of task name -> tensor, got {type(trial).__name__}"
        )
    names = list(trial) if output_names is None else list(output_names)
    missing = [n for n in names if n not in trial]
    if missing or len(set(names)) != len(names) or not names:
        raise OnnxError(f"{path}: output_names {names} do not match the model's outputs {list(trial)}")
    if INPUT_NAME in names:
        raise OnnxError(f"{path}: a task may not be named {INPUT_NAME!r} (the ONNX input name)")
    wrapper = _TupleOutputs(model, names).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if exporter == "torchscript":
            _export_torchscript(wrapper, x, path, names, opset)
        else:
            _export_dynamo(wrapper, x, path, names, opset)
    except OnnxError:
        raise
    except Exception as exc:
        raise OnnxError(f"{path}: {exporter} export failed ({typed_line(exc)})") from exc
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise OnnxError(f"{path}: exported model fails the ONNX checker ({typed_line(exc)})") from None
    if metadata:
        write_metadata(path, metadata)
    return ExportResult(path=path, seconds=time.perf_counter() - t0, exporter=exporter)


def _export_torchscript(wrapper: nn.Module, x: torch.Tensor, path: Path, names: list[str], opset: int) -> None:
    """Legacy TorchScript-tracing exporter (fast); its deprecation warnings are silenced for this call only."""
    axes = {n: {0: BATCH_DIM} for n in [INPUT_NAME, *names]}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            wrapper,
            (x,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to ERROR for the duration of a call (the dynamo exporter logs progress warnings)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_dynamo(wrapper: nn.Module, x: torch.Tensor, path: Path, names: list[str], opset: int) -> None:
    """torch.export-based exporter (slow); its progress prints and warnings are kept out of the caller's output."""
    batch = torch.export.Dim(BATCH_DIM)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("torch", "onnxscript"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (x,),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    model = program.model_proto
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    onnx.save_model(model, str(path))


@dataclass
class ParityResult:
    """Largest absolute difference per output between torch and onnxruntime over ``n`` samples.

    An output passes when its difference is at most ``atol + rtol * scale``, ``scale`` being the
    largest magnitude of that torch output (float32 rounding grows with the values' size).
    """

    max_abs_diff: dict[str, float]
    atol: float
    n: int
    rtol: float = 0.0
    scale: dict[str, float] = field(default_factory=dict)

    def tolerance(self, name: str) -> float:
        """The allowed difference of one output."""
        return self.atol + self.rtol * self.scale.get(name, 0.0)

    @property
    def ok(self) -> bool:
        """All outputs within tolerance."""
        return all(d <= self.tolerance(k) for k, d in self.max_abs_diff.items())

    @property
    def worst(self) -> float:
        """The largest difference over all outputs."""
        return max(self.max_abs_diff.values(), default=0.0)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference; NaN in the same place counts as equal, elsewhere as infinite."""
    if a.shape != b.shape:
        return float("inf")
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return float("inf")
    keep = ~nan_a
    if not keep.any():
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.abs(a[keep] - b[keep])
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max())


def check_parity(
    model: nn.Module,
    path: PathLike | ort.InferenceSession,
    x: np.ndarray,
    atol: float = 1e-4,
    batch_size: int = 256,
    raise_on_fail: bool = True,
    rtol: float = 0.0,
) -> ParityResult:
    """Compare torch (eval, no grad) and onnxruntime outputs on ``x``; raise ParityError above
    ``atol + rtol * max|torch output|`` (see ``ParityResult``)."""
    where = getattr(path, "_model_path", None) or str(path)
    if not isinstance(path, ort.InferenceSession):
        load_onnx(path)
    sess = path if isinstance(path, ort.InferenceSession) else session(path)
    x = np.asarray(x, dtype=np.float32)
    got = run_onnx(sess, x, batch_size=batch_size)
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    want: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, max(len(x), 1), batch_size):
            out = model(torch.from_numpy(x[start : start + batch_size]).to(device))
            for k, v in out.items():
                want.setdefault(k, []).append(v.detach().float().cpu().numpy())
    diffs: dict[str, float] = {}
    scale: dict[str, float] = {}
    for name, onnx_out in got.items():
        if name not in want:
            raise ParityError(f"{where}: ONNX output {name!r} is not an output of the torch model {list(want)}")
        ref = np.concatenate(want[name], axis=0)
        diffs[name] = _max_abs_diff(ref, onnx_out)
        finite = np.abs(ref[np.isfinite(ref)])
        scale[name] = float(finite.max()) if finite.size else 0.0
    result = ParityResult(max_abs_diff=diffs, atol=atol, n=int(len(x)), rtol=rtol, scale=scale)
    if raise_on_fail and not result.ok:
        detail = ", ".join(f"{k}: {v:.3g} (allowed {result.tolerance(k):.3g})" for k, v in diffs.items())
        limit = f"atol={atol:g}" + (f" + rtol={rtol:g} * max|output|" if rtol else "")
        raise ParityError(f"{where}: torch/onnxruntime outputs differ above {limit} ({detail})", diffs)
    return result
