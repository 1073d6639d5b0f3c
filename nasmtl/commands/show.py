"""``nasmtl show``: a design's network as a text tree, and with ``-o`` as a picture; an ONNX file's metadata.

- ``nasmtl show runs/NAME --trial K``: trial K's design, rebuilt as the search built it (the run's
  space, data set heads and head pooling, patch convolutions lowered);
- ``nasmtl show DESIGN --grammar FILE``: a design string, or a file holding one, of a grammar (or cell
  space) with all stages shared, or a joint string ``arch=...;layout=...[;quant=...]`` with its own
  layout and policy; heads ``--heads`` (default MultiMNIST's, left and right, 10 classes each);
- ``nasmtl show m.onnx``: the file's inputs, outputs and ``nasmtl.*`` metadata.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasmtl.spaces.joint import build_network

NAME = "show"
HELP = "print a design's network as a text tree, draw it (-o fig.svg|png), or an ONNX file's metadata"

DEFAULT_HEADS = {"left": 10, "right": 10}
"""MultiMNIST's tasks: the heads of a design shown without a run."""
DEFAULT_INPUT_SHAPE = (1, 36, 36)
"""MultiMNIST's input: a design's input shape when neither ``--input-shape`` nor its grammar gives one."""

_GRAMMAR_COMMENT = re.compile(r"^#\s*grammar:\s*(\S+)")


def _shape(text: str) -> tuple[int, ...]:
    """``1,36,36`` or ``1x36x36`` as a shape; an argparse error otherwise."""
    try:
        shape = tuple(int(v) for v in re.split(r"[,x]", text.strip()))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"input shape must be positive integers like 1,36,36, got {text!r}")
    return shape


def _heads(text: str) -> dict[str, int]:
    """``left=10,right=10`` as task heads; an argparse error otherwise."""
    heads: dict[str, int] = {}
    for part in text.split(","):
        name, _, n = part.partition("=")
        if not name.strip() or not n.strip().isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"heads must look like left=10,right=10, got {text!r}")
        heads[name.strip()] = int(n)
    return heads


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="DESIGN_OR_RUN",
                   help="a run directory (with --trial), a design string or a file holding one, or an .onnx file")
    p.add_argument("--trial", type=int, default=None, help="trial number of the run")
    p.add_argument("--grammar", default=None,
                   help="grammar (.lark) or cell-space (.toml) file of a design string (default: a design "
                        "file's '# grammar: PATH' line)")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="input shape without batch, e.g. 1,36,36 (default: the grammar's //@ input, else 1,36,36)")
    p.add_argument("--heads", type=_heads, default=None,
                   help="task heads NAME=OUTPUTS,... of a design string (default left=10,right=10)")
    p.add_argument("--head-pool", choices=("global", "grid"), default="global",
                   help="how heads pool an image map, as [space] head (design strings; default global)")
    p.add_argument("-o", "--output", type=Path, default=None, help="draw the network to this .svg/.png/.pdf file")
    p.add_argument("--title", default=None, help="the picture's title (default: what is shown)")


def run(args: argparse.Namespace) -> int:
    from nasmtl.errors import CommandError

    from nasmtl.arch.draw import DRAW_FORMATS

    target = Path(args.target)
    out = args.output
    if out is not None and out.suffix.lower().lstrip(".") not in DRAW_FORMATS:
        raise CommandError(f"{out}: cannot draw to a {out.suffix or 'suffix-less'} file "
                           f"(use {', '.join('.' + f for f in DRAW_FORMATS)})")
    if target.suffix.lower() == ".onnx":
        if out is not None:
            raise CommandError(f"{target}: -o draws architectures; an ONNX file shows its metadata only")
        return _show_onnx(target)
    if target.is_dir():
        arch, policy, header = _from_run(target, args.trial)
    else:
        if args.trial is not None:
            raise CommandError(f"{target}: no such run directory")
        arch, policy, header = _from_design(args)
    from nasmtl.arch import arch_cost
    from nasmtl.arch.draw import draw_arch, text_tree

    cost = arch_cost(arch)
    precisions = getattr(policy, "precisions", None)
    print("\n".join(f"# {line}" for line in header))
    print(f"# {cost.params:,} params, {cost.macs:,} MACs")
    print(text_tree(arch, precisions=precisions))
    if out is not None:
        draw_arch(arch, out, precisions=precisions, title=args.title or header[0])
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _show_onnx(path: Path) -> int:
    """Print an ONNX file's inputs, outputs and metadata."""
    from nasmtl.onnx.graph import load_onnx
    from nasmtl.onnx.metadata import describe_metadata, nasmtl_metadata, onnx_io, read_metadata

    model = load_onnx(path)
    ins, outs = onnx_io(model)
    meta = read_metadata(model)
    print(f"{path}: inputs {', '.join(ins)}; outputs {', '.join(outs)}")
    if not nasmtl_metadata(meta):
        print("  no nasmtl metadata (export with export_onnx(..., metadata=model_metadata(data)))")
    for line in describe_metadata(meta):
        print(f"  {line}")
    return 0


def _from_run(run_dir: Path, trial: int | None) -> tuple[Any, Any, list[str]]:
    """Trial ``trial``'s network, policy and header lines, from a run directory."""
    from nasmtl.errors import CommandError
    from nasmtl.config import RunConfig
    from nasmtl.run.rundir import RunDir

    files = RunDir(run_dir)
    config_file = files.config_file
    if not config_file.is_file():
        raise CommandError(f"{run_dir}: not a run directory (no {config_file.name}"
                           f"{'' if files.is_run() else ' and no ' + files.run_file.name})")
    have = files.trial_numbers()
    listed = ", ".join(map(str, have)) or "none"
    if trial is None:
        raise CommandError(f"{run_dir}: give --trial K (trials: {listed})")
    record = files.trial_record(trial)
    if not record.is_file():
        raise CommandError(f"{run_dir}: no trial {trial} (trials: {listed})")
    try:
        rec = json.loads(record.read_text(encoding="utf-8"))
        cfg_dict = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"{run_dir}: trial {trial}: unreadable record or config ({e})") from None
    design = rec.get("design") if isinstance(rec, Mapping) else None
    if not isinstance(design, str) or not design:
        raise CommandError(f"{record}: trial {trial} has no design string")
    cfg = RunConfig.from_dict(cfg_dict, str(config_file))
    try:
        arch, policy = build_run_design(cfg, design)
    except Exception as e:
        if _is_user_error(e):
            raise CommandError(f"{run_dir}: trial {trial}: {_first_line(e)}") from None
        raise
    values = rec.get("objectives") or {}
    said = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()) \
        if isinstance(values, Mapping) else ""
    header = [f"{run_dir.name} trial {trial} ({rec.get('state', '?')}{': ' + said if said else ''})",
              f"design: {design}"]
    return arch, policy, header


def build_run_design(cfg: Any, text: str) -> tuple[Any, Any]:
    """A design string of a run's space, built as the search builds it; ``(network, policy or None)``."""
    from nasmtl.data import load_dataset
    from nasmtl.search.evaluate import load_space

    space = load_space(cfg)
    design = space.decode(text)
    data = load_dataset(dict(cfg.data), cfg.base_dir)
    names = list(cfg.tasks) if cfg.tasks is not None else data.task_names
    heads = {n: data.task(n).n_outputs for n in names}
    return build_network(space, design, tuple(data.input_shape), heads, cfg.space.head), getattr(design, "quant", None)


def _from_design(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """The network, policy and header lines of a design string or design file of ``--grammar``."""
    from nasmtl.errors import CommandError

    text, grammar, where = _design_text(args.target, args.grammar)
    if grammar is None:
        raise CommandError(f"{where}: a design string needs --grammar FILE (the grammar or cell space it is of)")
    if not Path(grammar).is_file():
        raise CommandError(f"{where}: no grammar file {grammar}")
    heads = args.heads or dict(DEFAULT_HEADS)
    try:
        space, design, shape = _decode(text, Path(grammar), args.input_shape, list(heads))
        arch = build_network(space, design, shape, heads, args.head_pool)
    except Exception as e:
        if _is_user_error(e):
            msg = _first_line(e)
            raise CommandError(f"{where}: {msg if grammar in msg else f'not a design of {grammar}: {msg}'}") from None
        raise
    title = f"{where if Path(args.target).is_file() else 'a design'} of {Path(grammar).name}"
    return arch, getattr(design, "quant", None), [title, f"design: {text}"]


def _design_text(target: str, grammar: str | None) -> tuple[str, str | None, str]:
    """The design string, the grammar (given, or a design file's ``# grammar:`` line) and a name for messages."""
    from nasmtl.errors import CommandError

    path = Path(target)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if grammar is None:
            named = [m.group(1) for m in map(_GRAMMAR_COMMENT.match, (ln.strip() for ln in lines)) if m]
            grammar = str((path.parent / named[0]).resolve()) if named else None
        text = "".join(ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#"))
        if not text:
            raise CommandError(f"{path}: the file holds no design string")
        return text, grammar, str(path)
    if "(" not in target and "=" not in target and ("/" in target or target.endswith((".txt", ".json"))):
        raise CommandError(f"{target}: no such run directory, design file or ONNX file")
    short = target if len(target) <= 60 else target[:57] + "..."
    return target, grammar, f"design {short!r}"


def _decode(text: str, grammar: Path, input_shape: tuple[int, ...] | None,
            tasks: list[str]) -> tuple[Any, Any, tuple[int, ...]]:
    """``(space, design, input shape)``: an architecture of the grammar, or a joint design with its own
    layout and policy; the shape is ``input_shape``, else the grammar's, else 1x36x36."""
    from nasmtl.spaces.joint import JointSpace
    from nasmtl.spaces.layout import LayoutSpace
    from nasmtl.spaces.quant import PRECISIONS, QuantSpace

    if grammar.suffix == ".toml":
        from nasmtl.spaces.cell import CellSpace

        arch_space: Any = CellSpace.from_file(grammar)
    else:
        from nasmtl.spaces.grammar import GrammarSpace

        arch_space = GrammarSpace.from_file(grammar, input_shape)
    shape = tuple(input_shape or getattr(arch_space, "input_shape", None) or DEFAULT_INPUT_SHAPE)
    if not text.startswith("arch="):
        return arch_space, arch_space.decode(text), shape
    has_quant = ";quant=" in text
    layout_text = text[text.rfind(";layout=") + len(";layout="):]
    layout_text = layout_text.split(";quant=")[0] if has_quant else layout_text
    n_stages = layout_text.count("/") + 1
    quant = QuantSpace(n_stages, PRECISIONS) if has_quant else None
    space = JointSpace(arch_space, LayoutSpace(tasks, n_stages), quant)
    return space, space.decode(text), shape


def _is_user_error(e: BaseException) -> bool:
    """Whether an exception means bad input (a design, config or data set), reported as one line."""
    from nasmtl.arch.registry import OpError, ShapeError
    from nasmtl.config import ConfigError
    from nasmtl.data import DataError
    from nasmtl.spaces.base import SpaceError

    return isinstance(e, (SpaceError, ShapeError, OpError, ConfigError, DataError, KeyError, FileNotFoundError))


def _first_line(e: BaseException) -> str:
    """An exception's message, first line only."""
    text = str(e).strip().strip("'\"")
    return text.splitlines()[0] if text else type(e).__name__
