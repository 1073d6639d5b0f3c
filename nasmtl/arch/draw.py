"""Pictures and text trees of an ``Arch``: the shared trunk, each task group's branch and the heads.

Nodes are grouped into *sections* read off the graph: nodes of stage copies (``s{i}.{group}.``
names from ``nasmtl.arch.compose``) by stage and by the tasks they feed, the nodes after the last
stage as the heads of their task; in a network without stage names, by the set of tasks each node
feeds (all tasks: the shared trunk). A section's quantization group is its stage (heads: the last
group; no stages: group 0), as ``nasmtl.onnx.policy`` reads it off the ONNX node names.

The picture is a layered top-to-bottom layout computed from the DAG (``nx.topological_generations``),
each task a column and each task group centred over its tasks' columns, drawn with matplotlib in
fixed-size boxes; matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import networkx as nx

from nasmtl.arch.ir import INPUT, Arch
from nasmtl.arch.registry import REQUIRED, get_op, has_op

Precisions = Union[Mapping[int, str], Sequence[str]]
"""Precision per layer group: ``{stage index: precision}``, a sequence by group, or a ``QuantPolicy``."""

_STAGE = re.compile(r"^s(\d+)\.")
_ALWAYS = {"conv": ("k",), "dwconv": ("k",), "maxpool": ("k",), "avgpool": ("k",), "im2col": ("k",)}
_ABBREV = {"stride": "s", "groups": "g", "padding": "pad", "multiplier": "mult"}
_LABEL_CHARS = 34

BOX_W, BOX_H = 2.5, 0.56
"""Box size in inches (fixed whatever the network's size)."""
PITCH_X, PITCH_Y = BOX_W + 0.3, BOX_H + 0.42
MAX_W, MAX_H = 60.0, 300.0
"""Figure size cap in inches (about 300 layers deep); a larger network is drawn scaled down to fit."""
PNG_DPI = 150
PNG_MAX_SIDE, PNG_MAX_PIXELS = 30000, 40_000_000
"""Caps on a PNG's longest side and its pixel count (its resolution is lowered for huge figures)."""

SHARED_COLOUR = "#d0d0d0"
GROUP_COLOURS = ("#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#bc80bd",
                 "#ccebc5", "#ffed6f")
PRECISION_COLOURS = {"fp32": "#9ecae1", "int8_static": "#74c476", "int8_dynamic": "#fdae6b",
                     "int4_weight": "#9e9ac8", "int4_int8": "#f768a1"}
OTHER_PRECISION_COLOUR = "#bdbdbd"
DRAW_FORMATS = ("svg", "png", "pdf")
"""File types ``draw_arch`` writes, chosen by the path's suffix."""


@dataclass(frozen=True)
class Section:
    """Nodes listed and drawn together: the input, one stage copy, a shared or branch part, or a task's head."""

    kind: str
    """``input``, ``shared`` (all tasks), ``branch`` (some tasks) or ``head`` (one task)."""
    tasks: tuple[str, ...]
    stage: int | None = None

    @property
    def group(self) -> str:
        """The task group's name, as ``nasmtl.arch.compose.group_name`` writes it."""
        return "+".join(sorted(self.tasks))

    @property
    def title(self) -> str:
        """A header such as ``shared [left+right] stage 0`` or ``head left``."""
        if self.kind == "input":
            return "input"
        if self.kind == "head":
            return f"head {self.tasks[0]}"
        where = f" stage {self.stage}" if self.stage is not None else ""
        return f"{self.kind} [{self.group}]{where}"


def node_label(arch: Arch, node: str) -> str:
    """An op and its main attributes, e.g. ``conv out=32 k=3 s=2`` or ``linear out=128``."""
    data = arch.graph.nodes[node]
    op = data["op"]
    if op == "input":
        return "input"
    attrs = data.get("attrs", {})
    defaults = get_op(op).attrs if has_op(op) else {}
    parts = [op]
    for key, value in attrs.items():
        default = defaults.get(key, REQUIRED)
        if value == default and key not in _ALWAYS.get(op, ()) and default is not REQUIRED:
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            parts.append(key if value else f"no{key}")
        elif isinstance(value, (tuple, list)):
            parts.append(f"{_ABBREV.get(key, key)}=({','.join(map(str, value))})")
        else:
            parts.append(f"{_ABBREV.get(key, key)}={value}")
    return " ".join(parts)


def shape_text(shape: Sequence[int]) -> str:
    """A shape as Python writes a tuple: ``(32, 34, 34)``, ``(10,)``."""
    return str(tuple(int(v) for v in shape))


def stage_of(node: str) -> int | None:
    """The stage index of a node named by ``compose`` (``s1.left.conv_3``), or None."""
    m = _STAGE.match(node)
    return int(m.group(1)) if m else None


def tasks_fed(arch: Arch) -> dict[str, tuple[str, ...]]:
    """For every node, the tasks whose outputs it feeds (in ``arch.outputs`` order)."""
    out: dict[str, list[str]] = {n: [] for n in arch.graph.nodes}
    for task, node in arch.outputs.items():
        for n in nx.ancestors(arch.graph, node) | {node}:
            out[n].append(task)
    return {n: tuple(ts) for n, ts in out.items()}


def sections(arch: Arch) -> dict[str, Section]:
    """The section of every node (see the module docstring)."""
    fed = tasks_fed(arch)
    n_tasks = len(arch.outputs)
    staged = any(stage_of(n) is not None for n in arch.graph.nodes)
    out: dict[str, Section] = {}
    for n in arch.graph.nodes:
        ts, stage = fed[n], stage_of(n)
        if n == INPUT:
            out[n] = Section("input", ts)
        elif stage is None and len(ts) == 1 and (staged or _is_head_node(arch, n, ts[0])):
            out[n] = Section("head", ts)
        else:
            out[n] = Section("shared" if len(ts) == n_tasks else "branch", ts, stage)
    return out


def _is_head_node(arch: Arch, node: str, task: str) -> bool:
    """Whether a node of a network without stage names is part of ``task``'s head (``add_head`` names)."""
    return arch.outputs.get(task) == node or node.startswith(f"{task}_")


def precision_map(precisions: Any) -> dict[int, str]:
    """``{group: precision}`` from a mapping, a sequence by group or a ``QuantPolicy``."""
    seq = getattr(precisions, "precisions", precisions)
    if isinstance(seq, Mapping):
        out = {int(k): str(v) for k, v in seq.items()}
    else:
        out = {i: str(p) for i, p in enumerate(seq)}
    if not out:
        raise ValueError("precisions: at least one layer group is needed")
    return out


def section_precision(section: Section, precisions: Mapping[int, str], staged: bool) -> str | None:
    """The precision of a section's layer group: its stage's, the last group's for heads, group 0 unstaged."""
    if section.kind == "input":
        return None
    last = max(precisions)
    if not staged:
        group = min(precisions)
    elif section.kind == "head" or section.stage is None:
        group = last
    else:
        group = min(section.stage, last)
    if group in precisions:
        return precisions[group]
    lower = [k for k in precisions if k <= group]
    return precisions[max(lower) if lower else min(precisions)]


def _topo_order(arch: Arch) -> list[str]:
    """A topological order that follows chains: next is a ready node fed by the latest node placed.

    So a branch's ops stay together (``conv, batchnorm, relu`` before the parallel ``identity``);
    ties go to the node added to the graph first.
    """
    g = arch.graph
    added = {n: i for i, n in enumerate(g.nodes)}
    waiting = {n: g.in_degree(n) for n in g}
    ready = [n for n, d in waiting.items() if d == 0]
    placed: dict[str, int] = {}
    while ready:
        nxt = max(ready, key=lambda n: (max((placed[u] for u in g.predecessors(n)), default=-1), -added[n]))
        ready.remove(nxt)
        placed[nxt] = len(placed)
        for v in g.successors(nxt):
            waiting[v] -= 1
            if waiting[v] == 0:
                ready.append(v)
    return list(placed)


def _ordered_sections(arch: Arch, secs: Mapping[str, Section]) -> list[tuple[Section, list[str]]]:
    """Sections with their nodes in order: input, then stages or shared before branches, then heads."""
    order = _topo_order(arch)
    members: dict[Section, list[str]] = {}
    for n in order:
        members.setdefault(secs[n], []).append(n)
    at = {n: i for i, n in enumerate(order)}
    first = {s: at[ns[0]] for s, ns in members.items()}
    tasks = list(arch.outputs)

    def key(s: Section) -> tuple[int, int, int]:
        if s.kind == "input":
            return (0, 0, 0)
        if s.kind == "head":
            return (2, tasks.index(s.tasks[0]), 0)
        rank = s.stage if s.stage is not None else (0 if s.kind == "shared" else 1)
        return (1, rank, first[s])

    return [(s, members[s]) for s in sorted(members, key=key)]


def _local_name(node: str) -> str:
    """A node's name without its ``s{i}.{group}.`` prefix."""
    return node.split(".", 2)[2] if _STAGE.match(node) and node.count(".") >= 2 else node


def _reference(node: str, consumer: str, secs: Mapping[str, Section]) -> str:
    """How a consumer's line names an input: its local name, with the stage when it is in another stage."""
    stage = secs[node].stage
    if secs[node] == secs[consumer] or stage is None:
        return _local_name(node)
    return f"{_local_name(node)} (s{stage})"


def text_tree(arch: Arch, *, precisions: Precisions | None = None) -> str:
    """An indented listing for terminals: input, shared trunk, one section per task group, heads.

    One line per op, ``label -> shape``; an op whose inputs are not just the line above names them
    (``add <- relu_3, identity_4``; ``(s0)``: a node of stage 0), and the nodes so named start their
    line with their name. With ``precisions`` each section's header gives its layer group's precision.
    """
    secs = sections(arch)
    staged = any(s.stage is not None for s in secs.values())
    pmap = precision_map(precisions) if precisions is not None else None
    ordered = _ordered_sections(arch, secs)
    g = arch.graph
    lines = [f"input {shape_text(arch.input_shape)}"]
    prev_of: dict[str, str | None] = {}
    for _, nodes in ordered:
        for i, n in enumerate(nodes):
            prev_of[n] = nodes[i - 1] if i else None
    named = {u for n in arch.op_nodes() if not _plain_inputs(arch, n, prev_of[n], secs)
             for u in arch.inputs_of(n) if u != INPUT}
    for sec, nodes in ordered:
        if sec.kind == "input":
            continue
        prec = section_precision(sec, pmap, staged) if pmap is not None else None
        suffix = f" ({prec})" if prec else ""
        items = []
        for n in nodes:
            text = node_label(arch, n)
            if not _plain_inputs(arch, n, prev_of[n], secs):
                text += " <- " + ", ".join(_reference(u, n, secs) for u in arch.inputs_of(n))
            if n in named:
                text = f"{_local_name(n)}: {text}"
            items.append(f"{text} -> {shape_text(g.nodes[n]['shape'])}")
        if sec.kind == "head":
            lines.append(f"head {sec.tasks[0]}{suffix}: " + ", ".join(items))
        else:
            lines.append(sec.title + suffix)
            lines.extend(f"  {item}" for item in items)
    return "\n".join(lines)


def _plain_inputs(arch: Arch, node: str, prev: str | None, secs: Mapping[str, Section]) -> bool:
    """Whether a node's only input is the line above it (or, first in its section, a node of another one)."""
    ins = arch.inputs_of(node)
    if len(ins) != 1:
        return False
    if prev is None:
        return secs[ins[0]] != secs[node]
    return ins[0] == prev


# ---- picture ------------------------------------------------------------------------------------


@dataclass
class Placement:
    """Where a picture puts things, in (column, layer) units: every node, and the bends of long edges."""

    nodes: dict[str, tuple[float, int]]
    routes: dict[tuple[str, str], list[tuple[float, int]]]
    """For an edge spanning more than one layer, one point per layer it passes (drawn around the boxes)."""


VIRTUAL_WIDTH = 0.3
"""Columns a long edge takes where it passes a layer (a box takes one)."""


def place(arch: Arch) -> Placement:
    """Layers from the DAG's topological generations, columns by task group, long edges routed.

    Task ``i`` sits in column band ``i`` (as wide as the widest branch or head layer); a node is
    centred over the bands of the tasks it feeds, nodes of one section in one layer side by side.
    An edge spanning several layers gets a point in each layer it passes, which keeps its column
    where it can (so it runs beside the boxes, not through them); no two things of a layer overlap.
    """
    g = arch.graph
    layer = {n: i for i, gen in enumerate(nx.topological_generations(g)) for n in gen}
    fed = tasks_fed(arch)
    secs = sections(arch)
    order = {n: i for i, n in enumerate(_topo_order(arch))}
    tasks = list(arch.outputs)
    crowd: dict[tuple[int, Section], list[str]] = {}
    for n in sorted(g.nodes, key=order.__getitem__):
        crowd.setdefault((layer[n], secs[n]), []).append(n)
    band = max((len(ns) for (_, sec), ns in crowd.items() if sec.kind in ("branch", "head")), default=1) + 0.4
    want: dict[str, float] = {}
    for ns in crowd.values():
        ts = fed[ns[0]] or tuple(tasks)
        centre = band * sum(tasks.index(t) for t in ts) / len(ts)
        for j, n in enumerate(ns):
            want[n] = centre + j - (len(ns) - 1) / 2
    passing: dict[int, list[tuple[str, str]]] = {}
    for u, v in sorted(g.edges, key=lambda e: (order[e[0]], order[e[1]])):
        for k in range(layer[u] + 1, layer[v]):
            passing.setdefault(k, []).append((u, v))
    nodes: dict[str, tuple[float, int]] = {}
    routes: dict[tuple[str, str], list[tuple[float, int]]] = {}
    by_layer: dict[int, list[str]] = {}
    for n, k in layer.items():
        by_layer.setdefault(k, []).append(n)
    for k in sorted(by_layer):
        items: list[tuple[float, float, int, Any]] = [(want[n], 1.0, order[n], n) for n in by_layer[k]]
        for e in passing.get(k, []):
            last = routes[e][-1][0] if e in routes else nodes[e[0]][0]
            items.append((last, VIRTUAL_WIDTH, order[e[1]], e))
        items.sort(key=lambda it: (it[0], it[2]))
        xs = [items[0][0]]
        for prev, it in zip(items, items[1:]):
            xs.append(max(it[0], xs[-1] + (prev[1] + it[1]) / 2))
        real = [i for i, it in enumerate(items) if it[1] == 1.0]
        shift = sum(items[i][0] - xs[i] for i in real) / len(real)
        for (_, _, _, what), x in zip(items, xs):
            if isinstance(what, tuple):
                routes.setdefault(what, []).append((x + shift, k))
            else:
                nodes[what] = (x + shift, k)
    return Placement(nodes, routes)


def _group_colours(arch: Arch, secs: Mapping[str, Section]) -> dict[tuple[str, ...], str]:
    """A colour per task group: grey for all tasks, a palette colour per task and per other group."""
    tasks = tuple(arch.outputs)
    colours: dict[tuple[str, ...], str] = {tasks: SHARED_COLOUR}
    for t in tasks:
        colours.setdefault((t,), GROUP_COLOURS[(len(colours) - 1) % len(GROUP_COLOURS)])
    for n in _topo_order(arch):
        ts = secs[n].tasks
        if ts and ts not in colours:
            colours[ts] = GROUP_COLOURS[(len(colours) - 1) % len(GROUP_COLOURS)]
    return colours


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    """Text cut to ``limit`` characters with an ellipsis, so it stays inside its box."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw_arch(arch: Arch, path: str | Path, *, precisions: Precisions | None = None,
              title: str | None = None) -> Path:
    """Draw ``arch`` to ``path`` (``.svg``, ``.png`` or ``.pdf``, by its suffix); returns the path.

    Boxes hold each op's label and output shape; sections (stage copies, branches, heads) sit on a
    tinted band of their task group's colour, labelled with the group; outputs are labelled with
    their task. With ``precisions`` boxes are coloured by their layer group's precision, with a legend.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in DRAW_FORMATS:
        raise ValueError(f"{path}: cannot draw to a {path.suffix or 'suffix-less'} file (use .svg, .png or .pdf)")
    import matplotlib
    from matplotlib.figure import Figure

    secs = sections(arch)
    pmap = precision_map(precisions) if precisions is not None else None
    placed = place(arch)
    xs = [x for x, _ in placed.nodes.values()] + [x for pts in placed.routes.values() for x, _ in pts]
    x0, span = min(xs), max(xs) - min(xs)
    colours = _group_colours(arch, secs)
    used = sorted(set((pmap or {}).values()),
                  key=lambda p: list(PRECISION_COLOURS).index(p) if p in PRECISION_COLOURS else len(PRECISION_COLOURS))
    header = (0.45 if title else 0.15) + 0.24 * (max(len(colours), len(used)) + 1) + 0.2
    margin = 0.35
    width = max(span * PITCH_X + BOX_W + 2 * margin, 5.2 if pmap else 3.4)
    height = header + (max(k for _, k in placed.nodes.values()) + 1) * PITCH_Y + margin
    scale = min(1.0, MAX_W / width, MAX_H / height)
    left = (width - span * PITCH_X - BOX_W) / 2

    def at(x: float, k: int) -> tuple[float, float]:
        """Inches (from the bottom left) of the centre of column ``x``, layer ``k``."""
        return left + (x - x0) * PITCH_X + BOX_W / 2, height - header - k * PITCH_Y - BOX_H / 2

    fig = Figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    centres = {n: at(*xk) for n, xk in placed.nodes.items()}
    pen = _Pen(ax, scale)
    for sec, nodes in _ordered_sections(arch, secs):
        if sec.kind != "input":
            prec = _precision_of(sec, pmap, secs)
            label = sec.title.replace(" [", " ").replace("]", "") + (f" · {prec}" if prec else "")
            pen.band([centres[n] for n in nodes], colours.get(sec.tasks, SHARED_COLOUR), label)
    for u, v in arch.graph.edges:
        bends = [at(x, k) for x, k in placed.routes.get((u, v), [])]
        pen.edge(centres[u], bends, centres[v])
    for n, (x, y) in centres.items():
        sec = secs[n]
        prec = _precision_of(sec, pmap, secs)
        if sec.kind == "input":
            face, edge = "white", "#333333"
        elif pmap is not None:
            face, edge = PRECISION_COLOURS.get(prec or "", OTHER_PRECISION_COLOUR), colours.get(sec.tasks, "#333333")
        else:
            face, edge = colours.get(sec.tasks, SHARED_COLOUR), "#333333"
        pen.box((x, y), node_label(arch, n), shape_text(arch.graph.nodes[n]["shape"]), face, edge,
                thick=pmap is not None and sec.kind != "input")
    for task, n in arch.outputs.items():
        pen.caption(centres[n], f"output: {task}")
    if title:
        ax.text(margin, height - 0.12, _short(title, 140), fontsize=10 * scale, ha="left", va="top", weight="bold")
    top = 1 - (0.5 if title else 0.15) / height
    n_all = len(arch.outputs)
    groups = {("shared " if len(ts) == n_all and n_all > 1 else "") + "+".join(ts): c for ts, c in colours.items()}
    pen.legend(fig, "task group", groups, (margin / width, top), "upper left")
    if pmap is not None:
        pen.legend(fig, "precision", {p: PRECISION_COLOURS.get(p, OTHER_PRECISION_COLOUR) for p in used},
                   (1 - margin / width, top), "upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    w_in, h_in = width * scale, height * scale
    dpi = max(10, int(min(PNG_DPI, PNG_MAX_SIDE / max(w_in, h_in), (PNG_MAX_PIXELS / (w_in * h_in)) ** 0.5)))
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nasmtl"}):
        fig.savefig(path, format=fmt, dpi=dpi, metadata={"Date": None} if fmt in ("svg", "pdf") else None)
    return path


def _precision_of(sec: Section, pmap: Mapping[int, str] | None, secs: Mapping[str, Section]) -> str | None:
    """A section's precision in a picture (None without precisions)."""
    if pmap is None:
        return None
    return section_precision(sec, pmap, any(s.stage is not None for s in secs.values()))


class _Pen:
    """The few matplotlib shapes a picture is made of, at a fixed size in inches (times ``scale``)."""

    def __init__(self, ax: Any, scale: float) -> None:
        self.ax = ax
        self.scale = scale
        self.font = 7.5 * scale

    def band(self, centres: Sequence[tuple[float, float]], colour: str, label: str) -> None:
        """A tinted rectangle behind a section's boxes, its label at the top left."""
        from matplotlib.patches import Rectangle

        pad, room = 0.08, 0.16
        x_lo = min(c[0] for c in centres) - BOX_W / 2 - pad
        x_hi = max(c[0] for c in centres) + BOX_W / 2 + pad
        y_lo = min(c[1] for c in centres) - BOX_H / 2 - pad
        y_hi = max(c[1] for c in centres) + BOX_H / 2 + room
        self.ax.add_patch(Rectangle((x_lo, y_lo), x_hi - x_lo, y_hi - y_lo, facecolor=colour, alpha=0.22,
                                    edgecolor=colour, linewidth=self.scale, linestyle="--", zorder=0))
        self.ax.text(x_lo + 0.04, y_hi - 0.015, label, fontsize=self.font * 0.85, va="top", ha="left",
                     color="#404040", style="italic", zorder=2)

    def edge(self, src: tuple[float, float], bends: Sequence[tuple[float, float]], dst: tuple[float, float]) -> None:
        """An arrow from the bottom of one box to the top of another, straight down through its bends."""
        from matplotlib.patches import FancyArrowPatch
        from matplotlib.path import Path as MplPath

        points = [(src[0], src[1] - BOX_H / 2)]
        for x, y in bends:
            points += [(x, y + BOX_H / 2), (x, y - BOX_H / 2)]
        points.append((dst[0], dst[1] + BOX_H / 2))
        self.ax.add_patch(FancyArrowPatch(path=MplPath(points), arrowstyle="-|>", mutation_scale=9 * self.scale,
                                          linewidth=0.8 * self.scale, color="#555555", zorder=1))

    def box(self, centre: tuple[float, float], label: str, shape: str, face: str, edge: str, thick: bool) -> None:
        """One op: a rounded box with its label and, below it, its output shape."""
        from matplotlib.patches import FancyBboxPatch

        x, y = centre
        self.ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                         boxstyle="round,pad=0,rounding_size=0.06", facecolor=face, edgecolor=edge,
                                         linewidth=(2.2 if thick else 0.9) * self.scale, zorder=3))
        self.ax.text(x, y + 0.09, _short(label), fontsize=self.font, ha="center", va="center", zorder=4,
                     family="monospace")
        self.ax.text(x, y - 0.13, shape, fontsize=self.font * 0.9, ha="center", va="center", color="#333333",
                     zorder=4)

    def caption(self, centre: tuple[float, float], text: str) -> None:
        """Bold text just below a box (the task an output answers)."""
        self.ax.text(centre[0], centre[1] - BOX_H / 2 - 0.06, text, fontsize=self.font * 1.1, ha="center",
                     va="top", weight="bold", color="#202020", zorder=4)

    def legend(self, fig: Any, title: str, entries: Mapping[str, str], anchor: tuple[float, float], loc: str) -> None:
        """A legend of coloured squares in the figure's header."""
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=c, edgecolor="#333333", label=name) for name, c in entries.items()]
        fig.legend(handles=handles, loc=loc, bbox_to_anchor=anchor, fontsize=self.font, title=title,
                   title_fontsize=self.font, frameon=False)
