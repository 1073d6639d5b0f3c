"""Self-describing ONNX files: what a model's input and outputs mean, kept in the file's ``metadata_props``.

Keys (values that are not strings are stored as JSON text):

- ``nasmtl.design``: the design string the model was built from;
- ``nasmtl.tasks``: one entry per output, ``{name, kind, n_outputs, output, primary_metric, labels?,
  target_transform?}``;
- ``nasmtl.input``: ``{name, shape, dtype, batch, preprocessing, transform?}`` (``transform``: the data
  set's ``preprocessing["inputs"]`` record, e.g. the mean and std of z-scored features);
- ``nasmtl.quant_policy``: the precision of each layer group (``fp32,int8_static``);
- ``nasmtl.metrics``: ``{split, budget, values}``, how the model was measured;
- ``nasmtl.version``: the nasmtl version that wrote the file.

Any ONNX reader shows them (``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``);
files without them work everywhere as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

import onnx

from nasmtl.onnx.graph import PathLike, as_model, load_onnx

if TYPE_CHECKING:
    from nasmtl.data import MultiTaskDataset, Task

PREFIX = "nasmtl."
MetaValue = Union[str, float, int, bool, dict, list, None]

_KNOWN_INPUTS = {
    "multimnist": "pixels scaled to [0, 1]: two MNIST digits overlaid (pixel-wise max) on a square canvas, "
                  "the left digit near the top-left corner, the right one near the bottom-right",
}
_KNOWN_LABELS = {"multimnist": tuple(str(d) for d in range(10))}


def _encode(value: MetaValue) -> str:
    """A metadata value as ONNX stores it: strings as they are, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> Any:
    """A stored value back: the JSON value where the text is JSON (but not a bare JSON string), else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, str) else value


def write_metadata(model_or_path: onnx.ModelProto | PathLike, props: Mapping[str, MetaValue]) -> onnx.ModelProto:
    """Set ``props`` in a model's ``metadata_props`` (other keys kept); a path is rewritten in place.

    Returns the model (the one given, or the one written to the path).
    """
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_onnx(model_or_path)
    stored = {p.key: p.value for p in model.metadata_props}
    stored.update({str(k): _encode(v) for k, v in props.items()})
    onnx.helper.set_model_props(model, stored)
    if not isinstance(model_or_path, onnx.ModelProto):
        onnx.save_model(model, str(model_or_path))
    return model


def read_metadata(path_or_model: onnx.ModelProto | PathLike) -> dict[str, Any]:
    """Every ``metadata_props`` entry of a file or model, JSON values decoded (``{}`` when it has none)."""
    model, _ = as_model(path_or_model)
    return {p.key: _decode(p.value) for p in model.metadata_props}


def copy_metadata(src: onnx.ModelProto | PathLike, dst: PathLike) -> int:
    """Make the file ``dst`` carry ``src``'s metadata (other keys of ``dst`` kept); returns the entries copied.

    A quantized file gets its fp32 file's entries this way whatever the quantizer kept (onnxruntime
    1.32 keeps them; this does not depend on it). ``dst`` is rewritten only when it lacks some;
    both files, already checked by their writers, are read without onnx's checker.
    """
    model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    have = {p.key: p.value for p in onnx.load(str(dst), load_external_data=False).metadata_props} if props else {}
    if any(have.get(k) != v for k, v in props.items()):
        write_metadata(dst, props)
    return len(props)


def nasmtl_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``nasmtl.*`` entries of a metadata dict, keys without the prefix."""
    return {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}


def output_meaning(task: Task, target_transform: Mapping[str, Any] | None = None) -> str:
    """What a task's output holds, in words (``logits over 10 classes``)."""
    n = task.n_outputs
    if task.kind == "classification":
        return f"logits over {n} classes (arg-max is the class)"
    if task.kind == "multilabel":
        return f"logits of {n} independent labels (a label is present where its logit > 0)"
    values = f"{n} regression value{'s' if n > 1 else ''}"
    if target_transform and target_transform.get("standardized"):
        return f"{values}, z-scores of the targets (value * std + mean, see target_transform, gives their units)"
    return f"{values} (in the units of the training targets)"


def task_entry(task: Task, labels: tuple[str, ...] | None = None,
               target_transform: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A task's ``nasmtl.tasks`` entry; ``labels`` where the task's classes are known, and how targets were
    transformed for training (``MultiTaskDataset.preprocessing["targets"]``) where they were."""
    entry: dict[str, Any] = {"name": task.name, "kind": task.kind, "n_outputs": int(task.n_outputs),
                             "output": output_meaning(task, target_transform), "primary_metric": task.primary_metric}
    names = task.classes if task.classes is not None else labels
    if names is not None and len(names) == task.n_outputs:
        entry["labels"] = list(names)
    if target_transform:
        entry["target_transform"] = dict(target_transform)
    return entry


def input_entry(data: MultiTaskDataset, preprocessing: str | None = None) -> dict[str, Any]:
    """The ``nasmtl.input`` entry of a data set: name, shape (no batch), dtype, batch axis, preprocessing.

    ``preprocessing`` (words) defaults to what is known of the data set, else to its
    ``preprocessing["inputs"]["scaling"]`` text, else to the range of its training inputs; the rest of
    that record, when there is any, is kept as ``transform`` (e.g. the mean and std of z-scored features).
    """
    record = dict((getattr(data, "preprocessing", None) or {}).get("inputs") or {})
    if preprocessing is None:
        preprocessing = _KNOWN_INPUTS.get(data.name)
    if preprocessing is None and isinstance(record.get("scaling"), str):
        preprocessing = record["scaling"]
    if preprocessing is None and record.get("standardized"):
        preprocessing = "z-scores: (x - mean) / std with the training split's mean and std (see transform)"
    if preprocessing is None:
        x = data.train.x
        seen = f", training values in [{float(x.min()):.4g}, {float(x.max()):.4g}]" if x.size else ""
        preprocessing = f"features as loaded from the data set {data.name!r}{seen}"
    entry: dict[str, Any] = {"name": "input", "shape": [int(d) for d in data.input_shape], "dtype": "float32",
                             "batch": "first axis, dynamic ('batch')", "preprocessing": preprocessing}
    transform = {k: v for k, v in record.items() if k != "scaling"}
    if transform:
        entry["transform"] = transform
    return entry


def model_metadata(data: MultiTaskDataset, design: str | None = None, policy: Any = None,
                   metrics: Mapping[str, Any] | None = None, *, preprocessing: str | None = None) -> dict[str, Any]:
    """The ``nasmtl.*`` metadata of a model trained on ``data`` (pass it to ``export_onnx(metadata=...)``).

    ``policy``: a ``QuantPolicy`` or its string. ``metrics``: ``{"split", "budget", "values"}``, or
    plain ``{name: value}`` (stored as ``{"values": ...}``).
    """
    import nasmtl

    labels = _KNOWN_LABELS.get(data.name)
    targets = (getattr(data, "preprocessing", None) or {}).get("targets") or {}
    out: dict[str, Any] = {f"{PREFIX}tasks": [task_entry(t, labels, targets.get(t.name)) for t in data.tasks],
                           f"{PREFIX}input": input_entry(data, preprocessing),
                           f"{PREFIX}version": nasmtl.__version__}
    if design is not None:
        out[f"{PREFIX}design"] = str(design)
    if policy is not None:
        out[f"{PREFIX}quant_policy"] = str(policy)
    if metrics is not None:
        block = dict(metrics)
        out[f"{PREFIX}metrics"] = block if "values" in block else {"values": block}
    return out


def describe_metadata(meta: Mapping[str, Any]) -> list[str]:
    """Lines for terminals: the ``nasmtl.*`` entries in words, then any other keys as they are."""
    ours = nasmtl_metadata(meta)
    lines: list[str] = []
    if "design" in ours:
        lines.append(f"design: {ours['design']}")
    for t in ours.get("tasks", []) if isinstance(ours.get("tasks"), list) else []:
        if isinstance(t, Mapping):
            labels = t.get("labels")
            tail = f"; labels {', '.join(map(str, labels))}" if labels else ""
            if t.get("target_transform"):
                tail += f"; target_transform {_brief(t['target_transform'])}"
            lines.append(f"output {t.get('name')}: {t.get('kind')}, {t.get('output')}{tail}")
    inp = ours.get("input")
    if isinstance(inp, Mapping):
        shape = tuple(inp.get("shape", ()))
        tail = f"; transform {_brief(inp['transform'])}" if inp.get("transform") else ""
        lines.append(f"input {inp.get('name', 'input')}: {shape} {inp.get('dtype', '')}, "
                     f"{inp.get('preprocessing', '')}".rstrip(", ") + tail)
    if "quant_policy" in ours:
        lines.append(f"quantization policy: {ours['quant_policy']}")
    m = ours.get("metrics")
    if isinstance(m, Mapping):
        where = ", ".join(f"{k} {m[k]}" for k in ("split", "budget") if m.get(k) not in (None, ""))
        values = m.get("values", {})
        text = ", ".join(f"{k} {_number(v)}" for k, v in values.items()) if isinstance(values, Mapping) else values
        lines.append(f"metrics{f' ({where})' if where else ''}: {text}")
    if "version" in ours:
        lines.append(f"written by nasmtl {ours['version']}")
    known = {"design", "tasks", "input", "quant_policy", "metrics", "version"}
    for k, v in meta.items():
        if not k.startswith(PREFIX) or k[len(PREFIX):] not in known:
            lines.append(f"{k}: {v if isinstance(v, str) else json.dumps(v)}")
    return lines


def _brief(value: Any, limit: int = 100) -> str:
    """A value as JSON text, cut to ``limit`` characters (a transform's mean and std can be long)."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(v: Any) -> str:
    """A metric value, short: floats to 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def onnx_io(path_or_model: onnx.ModelProto | PathLike) -> tuple[list[str], list[str]]:
    """The graph's inputs and outputs as ``name [dims]`` strings (dynamic dims by name)."""
    model, _ = as_model(path_or_model)

    def text(v: onnx.ValueInfoProto) -> str:
        dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]
        return f"{v.name} [{', '.join(dims)}]"

    inits = {t.name for t in model.graph.initializer}
    return [text(v) for v in model.graph.input if v.name not in inits], [text(v) for v in model.graph.output]
