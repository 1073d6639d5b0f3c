"""Cell search spaces read from TOML files (``search_spaces/nb201.toml``, ``search_spaces/darts.toml``).

A cell is a DAG: ``inputs`` input nodes, then ``nodes`` intermediate nodes, each the sum of its
incoming edges, every edge carrying one op of a named op set (each op a short chain of IR ops).
Two topologies: ``all_edges`` (every earlier node feeds every node, as in NAS-Bench-201) and
``fan_in`` (each node picks ``fan_in`` distinct earlier nodes, as in DARTS). The cell output is the
last node (``output = "last"``) or the concatenation of all intermediate nodes (``"concat"``).
A macro skeleton stacks blocks and cells into stages; ``$NAME`` in attributes reads a parameter.

A design holds one cell per cell type, each a tuple of ``(src, op)`` slots, node by node. The
canonical string drops edges that cannot reach the output or that carry zeros and takes the
smallest string over relabellings of the intermediate nodes that keep the DAG, so isomorphic
cells share one string. Cell strings follow NAS-Bench-201: ``|op~src|...|+|op~src|...|``.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nasmtl.arch.compose import compose, shared_layout
from nasmtl.arch.ir import Arch, ArchBuilder
from nasmtl.arch.registry import Shape, ShapeError, has_op
from nasmtl.spaces.base import SEARCH_SPACES, Decide, Prior, SpaceError, read_space_file, rng_decide, weighted_choice

Slot = tuple[int, str]
"""One incoming edge of a node: (source node, op name)."""
CellSlots = tuple[Slot, ...]


@dataclass(frozen=True)
class CellDesign:
    """One design of a cell space: the slots of each cell type, in the space's cell order."""

    cells: tuple[CellSlots, ...]


@dataclass(frozen=True)
class OpDef:
    """One op of the op set: IR layers for stride 1 and for a reducing edge (stride 2)."""

    name: str
    layers: tuple[tuple[str, dict[str, Any]], ...]
    reduce: tuple[tuple[str, dict[str, Any]], ...]
    weight: float
    zero: bool


@dataclass(frozen=True)
class CellType:
    """Topology of one cell type and the layers that adapt its inputs."""

    name: str
    topology: str
    inputs: int
    nodes: int
    output: str
    fan_in: int
    reduction: bool
    preprocess: tuple[tuple[str, dict[str, Any]], ...]
    preprocess_reduce: tuple[tuple[str, dict[str, Any]], ...]

    def sources(self, node: int) -> list[int]:
        """Nodes that may feed ``node`` (global numbering: inputs first)."""
        return list(range(node))

    def node_ids(self) -> list[int]:
        """Global numbers of the intermediate nodes."""
        return list(range(self.inputs, self.inputs + self.nodes))

    def n_slots(self, node: int) -> int:
        """Number of incoming edges of ``node``."""
        return node if self.topology == "all_edges" else self.fan_in


@dataclass(frozen=True)
class Block:
    """A fixed block of the skeleton: one chain, or parallel chains merged by add/concat."""

    name: str
    branches: tuple[tuple[tuple[str, dict[str, Any]], ...], ...]
    merge: str


@dataclass
class CellSpace:
    """A cell space from a TOML file; implements ``SearchSpace`` and ``ArchitectureSpace``."""

    name: str
    path: str
    params: dict[str, int]
    ops: dict[str, OpDef]
    cell_types: tuple[CellType, ...]
    blocks: dict[str, Block]
    stage_items: list[list[str]]
    widths: list[int]
    _keys: list[str] = field(default_factory=list, repr=False)

    # ---- loading ----------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, **overrides: int) -> "CellSpace":
        """Read a space file; ``overrides`` replace entries of its ``[params]`` (e.g. ``N=2, C=16``)."""
        p, data = read_space_file(path, "space")
        return _parse(data, str(p), overrides)

    # ---- SearchSpace -------------------------------------------------------------------------

    def decision_keys(self) -> list[str]:
        """The stable decision keys of ``choices``."""
        return list(self._keys)

    def _options(self, key: str) -> tuple[list[str], list[float]]:
        ct, node, what = self._key_info[key]
        if what == "inputs":
            pairs = [",".join(map(str, c)) for c in itertools.combinations(ct.sources(node), ct.fan_in)]
            return pairs, [1.0] * len(pairs)
        names = list(self.ops)
        return names, [self.ops[n].weight for n in names]

    def sample_with(self, decide: Decide) -> CellDesign:
        """Build a design asking ``decide`` for every decision (keys as in ``choices``)."""
        out = {}
        for key in self._keys:
            opts, w = self._options(key)
            out[key] = decide(key, opts, w)
        return self.from_choices(out)

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> CellDesign:
        """Draw a design; ``prior`` reweights options per decision key."""
        return self.sample_with(rng_decide(rng, prior))

    def mutate(self, x: CellDesign, rng: np.random.Generator) -> CellDesign:
        """Change one decision to another option of positive weight (canonically different if possible)."""
        ch = self.choices(x)
        base = self.encode(x)
        keys = list(self._keys)
        fallback = x
        for _ in range(50):
            key = keys[int(rng.integers(len(keys)))]
            opts, w = self._options(key)
            alts = [(o, wi) for o, wi in zip(opts, w) if o != ch[key] and wi > 0]
            if not alts:
                continue
            new = dict(ch)
            new[key] = weighted_choice(rng, [a for a, _ in alts], [wi for _, wi in alts])
            fallback = self.from_choices(new)
            if self.encode(fallback) != base:
                return fallback
        return fallback

    def crossover(self, a: CellDesign, b: CellDesign, rng: np.random.Generator) -> CellDesign:
        """Uniform crossover over decisions (a node's inputs travel with its ops)."""
        ca, cb = self.choices(a), self.choices(b)
        out: dict[str, str] = {}
        groups: dict[str, list[str]] = {}
        for k in self._keys:
            groups.setdefault(k.rsplit(".", 1)[0] if "node" in k else k, []).append(k)
        for keys in groups.values():
            src = ca if rng.random() < 0.5 else cb
            out.update({k: src[k] for k in keys})
        return self.from_choices(out)

    def choices(self, x: CellDesign) -> dict[str, str]:
        """``{"edge_0": "nor_conv_3x3", ...}`` (one cell type) or ``{"normal.node2.inputs": "0,1", ...}``."""
        self._check(x)
        out: dict[str, str] = {}
        for ct, slots in zip(self.cell_types, x.cells):
            prefix = f"{ct.name}." if len(self.cell_types) > 1 else ""
            i = 0
            for node in ct.node_ids():
                node_slots = slots[i:i + ct.n_slots(node)]
                i += ct.n_slots(node)
                if ct.topology == "all_edges":
                    for s, op in node_slots:
                        out[f"{prefix}edge_{_edge_index(ct, node, s)}"] = op
                else:
                    ordered = sorted(node_slots)
                    out[f"{prefix}node{node}.inputs"] = ",".join(str(s) for s, _ in ordered)
                    for j, (_, op) in enumerate(ordered):
                        out[f"{prefix}node{node}.op{j}"] = op
        return out

    def from_choices(self, ch: Mapping[str, str]) -> CellDesign:
        """The design with these decisions (inverse of ``choices``)."""
        cells = []
        for ct in self.cell_types:
            prefix = f"{ct.name}." if len(self.cell_types) > 1 else ""
            slots: list[Slot] = []
            for node in ct.node_ids():
                if ct.topology == "all_edges":
                    for s in ct.sources(node):
                        slots.append((s, self._get(ch, f"{prefix}edge_{_edge_index(ct, node, s)}")))
                else:
                    srcs = [int(v) for v in self._get(ch, f"{prefix}node{node}.inputs").split(",")]
                    for j, s in enumerate(srcs):
                        slots.append((s, self._get(ch, f"{prefix}node{node}.op{j}")))
            cells.append(tuple(slots))
        x = CellDesign(tuple(cells))
        self._check(x)
        return x

    def _get(self, ch: Mapping[str, str], key: str) -> str:
        if key not in ch:
            raise SpaceError(f"space '{self.name}': decision '{key}' missing")
        return ch[key]

    def encode(self, x: CellDesign) -> str:
        """The canonical string: dead edges cut, smallest over DAG-preserving node relabellings."""
        self._check(x)
        parts = [_cell_string(ct, self._canonical(ct, slots), self.zero_op) for ct, slots in zip(self.cell_types, x.cells)]
        if len(self.cell_types) == 1:
            return parts[0]
        return ";".join(f"{ct.name}={p}" for ct, p in zip(self.cell_types, parts))

    def decode(self, s: str) -> CellDesign:
        """Parse a cell string (canonical or not) into a design."""
        if len(self.cell_types) == 1:
            texts = [s]
        else:
            named = dict(_split_named(s, self.name))
            missing = [ct.name for ct in self.cell_types if ct.name not in named]
            if missing:
                raise SpaceError(f"space '{self.name}': design string lacks cell(s) {missing}: {s!r}")
            texts = [named[ct.name] for ct in self.cell_types]
        cells = []
        for ct, text in zip(self.cell_types, texts):
            nodes = text.strip().split("+")
            if len(nodes) != ct.nodes:
                raise SpaceError(f"space '{self.name}': cell {ct.name} needs {ct.nodes} nodes, got {text!r}")
            slots: list[Slot] = []
            for node, part in zip(ct.node_ids(), nodes):
                m = re.fullmatch(r"\|(.*)\|", part.strip())
                if not m:
                    raise SpaceError(f"space '{self.name}': bad node {part!r} in {s!r}")
                node_slots = []
                for item in m.group(1).split("|"):
                    op, _, src = item.partition("~")
                    if not src.isdigit():
                        raise SpaceError(f"space '{self.name}': bad edge {item!r} in {s!r}")
                    node_slots.append((int(src), op))
                if ct.topology == "all_edges":
                    node_slots.sort()
                slots.extend(node_slots)
            cells.append(tuple(slots))
        x = CellDesign(tuple(cells))
        self._check(x)
        return x

    def size(self) -> float:
        """The number of raw designs (before merging isomorphic cells)."""
        total = 1.0
        for ct in self.cell_types:
            for node in ct.node_ids():
                if ct.topology == "all_edges":
                    total *= len(self.ops) ** node
                else:
                    total *= math.comb(node, ct.fan_in) * len(self.ops) ** ct.fan_in
        return total

    def _check(self, x: CellDesign) -> None:
        if not isinstance(x, CellDesign) or len(x.cells) != len(self.cell_types):
            raise SpaceError(f"space '{self.name}': not a design of this space: {x!r}")
        for ct, slots in zip(self.cell_types, x.cells):
            want = sum(ct.n_slots(n) for n in ct.node_ids())
            if len(slots) != want:
                raise SpaceError(f"space '{self.name}': cell {ct.name} needs {want} edges, got {len(slots)}")
            i = 0
            for node in ct.node_ids():
                node_slots = slots[i:i + ct.n_slots(node)]
                i += ct.n_slots(node)
                srcs = [s for s, _ in node_slots]
                for s, op in node_slots:
                    if op not in self.ops:
                        raise SpaceError(f"space '{self.name}': unknown op '{op}' (ops: {', '.join(self.ops)})")
                    if not 0 <= s < node:
                        raise SpaceError(f"space '{self.name}': node {node} cannot take input from node {s}")
                if ct.topology == "all_edges" and srcs != ct.sources(node):
                    raise SpaceError(f"space '{self.name}': node {node} needs one edge from each of {ct.sources(node)}")
                if ct.topology == "fan_in" and len(set(srcs)) != len(srcs):
                    raise SpaceError(f"space '{self.name}': node {node} takes input {srcs} twice")

    # ---- canonical form ---------------------------------------------------------------------

    def _live(self, ct: CellType, slots: CellSlots) -> dict[int, list[Slot]]:
        """Per node, the edges that carry a non-zero signal to the cell output."""
        zero_ops = {n for n, o in self.ops.items() if o.zero}
        per_node = _per_node(ct, slots)
        nonzero = set(range(ct.inputs))
        live: dict[int, list[Slot]] = {}
        for node in ct.node_ids():
            live[node] = [(s, op) for s, op in per_node[node] if op not in zero_ops and s in nonzero]
            if live[node]:
                nonzero.add(node)
        if ct.output == "last":
            needed = {ct.inputs + ct.nodes - 1}
            for node in reversed(ct.node_ids()):
                if node in needed:
                    needed |= {s for s, _ in live[node]}
                else:
                    live[node] = []
        return live

    def _canonical(self, ct: CellType, slots: CellSlots) -> dict[int, list[Slot]]:
        live = self._live(ct, slots)
        ids = ct.node_ids()
        free = ids[:-1] if ct.output == "last" else ids
        best: tuple[str, dict[int, list[Slot]]] | None = None
        for perm in itertools.permutations(free):
            mapping = {i: i for i in range(ct.inputs + ct.nodes)}
            mapping.update(dict(zip(free, perm)))
            if any(mapping[s] >= mapping[n] for n in ids for s, _ in live[n]):
                continue
            relabelled = {mapping[n]: sorted((mapping[s], op) for s, op in live[n]) for n in ids}
            text = _cell_string(ct, relabelled, self.zero_op)
            if best is None or text < best[0]:
                best = (text, relabelled)
        assert best is not None
        return best[1]

    # ---- building ---------------------------------------------------------------------------

    def stages(self, x: CellDesign, input_shape: Shape) -> list[Arch]:
        """The backbone of ``x``: one Arch per stage of the skeleton, each with output ``out``."""
        self._check(x)
        cells = {ct.name: (ct, slots) for ct, slots in zip(self.cell_types, x.cells)}
        out: list[Arch] = []
        shape = tuple(input_shape)
        for si, (items, width) in enumerate(zip(self.stage_items, self.widths)):
            env = dict(self.params)
            env["C"] = width * self.params["C"]
            b = ArchBuilder(shape)
            prev = cur = b.input
            for k, item in enumerate(items):
                name, reps = _item(item, self.params)
                for r in range(reps):
                    tag = f"{k}.{name}{r}"
                    if name in self.blocks:
                        prev = cur = self._add_block(b, self.blocks[name], cur, env, tag)
                    else:
                        ct, slots = cells[name]
                        new = self._add_cell(b, ct, self._live(ct, slots), [prev, cur], env, tag)
                        prev, cur = cur, new
            b.output("out", cur)
            try:
                arch = b.build()
            except ShapeError as e:
                raise ShapeError(f"space '{self.name}' stage {si}: {e}") from None
            out.append(arch)
            shape = arch.shape(arch.outputs["out"])
        return out

    def to_arch(self, x: CellDesign, input_shape: Shape, heads: Mapping[str, int]) -> Arch:
        """The whole network: stages with hard sharing and one head per task."""
        stages = self.stages(x, input_shape)
        return compose(stages, shared_layout(list(heads), len(stages)), heads)

    def _chain(self, b: ArchBuilder, x: str, layers, env: Mapping[str, int], prefix: str) -> str:
        for j, (op, attrs) in enumerate(layers):
            x = b.add(op, x, name=f"{prefix}.{j}.{op}", **{k: _resolve(v, env, self.path) for k, v in attrs.items()})
        return x

    def _add_block(self, b: ArchBuilder, blk: Block, x: str, env: Mapping[str, int], tag: str) -> str:
        outs = [self._chain(b, x, br, env, f"{tag}.b{i}") for i, br in enumerate(blk.branches)]
        if len(outs) == 1:
            return outs[0]
        return b.add(blk.merge, *outs, name=f"{tag}.{blk.merge}")

    def _add_cell(self, b: ArchBuilder, ct: CellType, live: dict[int, list[Slot]], ins: list[str],
                  env: Mapping[str, int], tag: str) -> str:
        """Add one cell reading the last ``ct.inputs`` of ``ins`` (previous, current); returns its output."""
        c = env["C"]
        h: dict[int, str | None] = {}
        ins = ins[-ct.inputs:]
        target = b.shape(ins[-1])
        for i, node in enumerate(ins):
            layers = ct.preprocess
            if ct.preprocess_reduce and b.shape(node)[1:] != target[1:]:
                layers = ct.preprocess_reduce
            h[i] = self._chain(b, node, layers, env, f"{tag}.pre{i}") if layers else node
        for node in ct.node_ids():
            terms = []
            for s, op in live[node]:
                od = self.ops[op]
                reducing = ct.reduction and s < ct.inputs
                e = dict(env, stride=2 if reducing else 1)
                layers = od.reduce if reducing and od.reduce else od.layers
                terms.append(self._chain(b, h[s], layers, e, f"{tag}.n{node}.e{s}"))
            if not terms:
                h[node] = None
                continue
            h[node] = terms[0] if len(terms) == 1 else b.add("add", *terms, name=f"{tag}.n{node}.add")
        stride = 2 if ct.reduction else 1
        ref = h[0]
        outs = [h[n] for n in ct.node_ids()] if ct.output == "concat" else [h[ct.node_ids()[-1]]]
        if all(o is None for o in outs):
            n_out = c * len(outs)
            return b.add("zero", ref, name=f"{tag}.zero", out=n_out, stride=stride)
        outs = [o if o is not None else b.add("zero", ref, name=f"{tag}.z{k}", out=c, stride=stride)
                for k, o in enumerate(outs)]
        return outs[0] if len(outs) == 1 else b.add("concat", *outs, name=f"{tag}.concat")

    @property
    def zero_op(self) -> str:
        """The op that cuts an edge (``zero = true`` in the file)."""
        return next(n for n, o in self.ops.items() if o.zero)

    def __post_init__(self) -> None:
        self._key_info: dict[str, tuple[CellType, int, str]] = {}
        for ct in self.cell_types:
            prefix = f"{ct.name}." if len(self.cell_types) > 1 else ""
            for node in ct.node_ids():
                if ct.topology == "all_edges":
                    for s in ct.sources(node):
                        self._key_info[f"{prefix}edge_{_edge_index(ct, node, s)}"] = (ct, node, "op")
                else:
                    self._key_info[f"{prefix}node{node}.inputs"] = (ct, node, "inputs")
                    for j in range(ct.fan_in):
                        self._key_info[f"{prefix}node{node}.op{j}"] = (ct, node, "op")
        self._keys = list(self._key_info)


# ---- helpers ----------------------------------------------------------------------------------


def _edge_index(ct: CellType, node: int, src: int) -> int:
    """Position of edge src->node in NAS-Bench-201 order (1<-0, 2<-0, 2<-1, 3<-0, ...)."""
    return sum(range(ct.inputs, node)) + src


def _per_node(ct: CellType, slots: CellSlots) -> dict[int, list[Slot]]:
    out, i = {}, 0
    for node in ct.node_ids():
        out[node] = list(slots[i:i + ct.n_slots(node)])
        i += ct.n_slots(node)
    return out


def _cell_string(ct: CellType, per_node: Mapping[int, Sequence[Slot]], zero: str) -> str:
    """NAS-Bench-201-style string; missing edges of ``all_edges`` cells are written as none."""
    parts = []
    for node in ct.node_ids():
        slots = dict((s, op) for s, op in per_node.get(node, []))
        if ct.topology == "all_edges":
            items = [(s, slots.get(s, zero)) for s in ct.sources(node)]
        else:
            items = sorted(per_node.get(node, []))
            unused = [s for s in ct.sources(node) if s not in slots]
            items = sorted(items + [(s, zero) for s in unused[:ct.fan_in - len(items)]])
        parts.append("|" + "|".join(f"{op}~{s}" for s, op in items) + "|")
    return "+".join(parts)


def _split_named(s: str, space: str) -> list[tuple[str, str]]:
    out = []
    for part in s.split(";"):
        name, eq, text = part.partition("=")
        if not eq:
            raise SpaceError(f"space '{space}': expected NAME=CELL parts separated by ';', got {s!r}")
        out.append((name.strip(), text))
    return out


def _item(item: str, params: Mapping[str, int]) -> tuple[str, int]:
    name, _, reps = item.partition("*")
    if not reps:
        return name.strip(), 1
    reps = reps.strip()
    return name.strip(), int(reps) if reps.isdigit() else int(params[reps])


def _resolve(v: Any, env: Mapping[str, int], path: str) -> Any:
    """``"$C"`` -> env["C"], ``"3*$C"`` -> 3 * env["C"]; other values unchanged."""
    if not isinstance(v, str) or "$" not in v:
        return v
    m = re.fullmatch(r"\s*(?:(\d+)\s*\*\s*)?\$(\w+)\s*", v)
    if not m or m.group(2) not in env:
        raise SpaceError(f"{path}: cannot resolve attribute value {v!r} (known: ${', $'.join(env)})")
    return int(m.group(1) or 1) * int(env[m.group(2)])


# ---- parsing ----------------------------------------------------------------------------------


def _layers(value: Any, where: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    if not isinstance(value, list):
        raise SpaceError(f"{where}: expected a list of {{ op = ... }} tables")
    out = []
    for i, layer in enumerate(value):
        if not isinstance(layer, dict) or not isinstance(layer.get("op"), str):
            raise SpaceError(f"{where}[{i}]: expected a table with an 'op' name, got {layer!r}")
        attrs = {k: v for k, v in layer.items() if k != "op"}
        if not has_op(layer["op"]):
            raise SpaceError(f"{where}[{i}]: unknown IR op '{layer['op']}'")
        out.append((layer["op"], attrs))
    return tuple(out)


def _parse(data: Mapping[str, Any], path: str, overrides: Mapping[str, int]) -> CellSpace:
    def need(table: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in table:
            raise SpaceError(f"{path}: missing key '{where}{key}'")
        return table[key]

    params = {k: int(v) for k, v in dict(data.get("params", {})).items()}
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise SpaceError(f"{path}: no parameter(s) {unknown} in [params] (has {sorted(params)})")
    params.update({k: int(v) for k, v in overrides.items()})
    if "C" not in params:
        raise SpaceError(f"{path}: missing key 'params.C' (base channel width)")

    ops: dict[str, OpDef] = {}
    for name, spec in dict(need(data, "ops", "")).items():
        where = f"{path}: ops.{name}"
        if isinstance(spec, list):
            spec = {"layers": spec}
        if not isinstance(spec, dict):
            raise SpaceError(f"{where}: expected a list of layers or a table")
        zero = bool(spec.get("zero", False))
        layers = _layers(spec.get("layers", []), f"{where}.layers")
        if not layers and not zero:
            raise SpaceError(f"{where}: an op needs layers (or zero = true for the 'none' op)")
        reduce = _layers(spec.get("reduce", []), f"{where}.reduce")
        weight = float(spec.get("weight", 1.0))
        if weight < 0 or not math.isfinite(weight):
            raise SpaceError(f"{where}.weight: must be a finite number >= 0")
        ops[name] = OpDef(name, layers, reduce, weight, zero)
    if sum(o.zero for o in ops.values()) != 1:
        raise SpaceError(f"{path}: ops: exactly one op must have zero = true (the op that cuts an edge)")
    if not any(o.weight > 0 for o in ops.values()):
        raise SpaceError(f"{path}: ops: at least one op needs a positive weight")

    cell_types = []
    for name, spec in dict(need(data, "cells", "")).items():
        where = f"cells.{name}."
        topology = need(spec, "topology", where)
        if topology not in ("all_edges", "fan_in"):
            raise SpaceError(f"{path}: {where}topology must be 'all_edges' or 'fan_in', got {topology!r}")
        output = spec.get("output", "last")
        if output not in ("last", "concat"):
            raise SpaceError(f"{path}: {where}output must be 'last' or 'concat', got {output!r}")
        inputs, nodes = int(spec.get("inputs", 1)), int(need(spec, "nodes", where))
        fan_in = int(spec.get("fan_in", 0))
        if inputs not in (1, 2) or nodes < 1:
            raise SpaceError(f"{path}: {where}inputs must be 1 or 2 and nodes >= 1")
        if topology == "fan_in" and not 1 <= fan_in <= inputs:
            raise SpaceError(f"{path}: {where}fan_in must be between 1 and inputs ({inputs})")
        cell_types.append(CellType(
            name, topology, inputs, nodes, output, fan_in, bool(spec.get("reduction", False)),
            _layers(spec.get("preprocess", []), f"{path}: {where}preprocess"),
            _layers(spec.get("preprocess_reduce", []), f"{path}: {where}preprocess_reduce")))
    if not cell_types:
        raise SpaceError(f"{path}: [cells] declares no cell type")

    blocks = {}
    for name, spec in dict(data.get("blocks", {})).items():
        where = f"{path}: blocks.{name}"
        if "layers" in spec:
            branches = (_layers(spec["layers"], f"{where}.layers"),)
        else:
            raw = need(spec, "branches", f"blocks.{name}.")
            branches = tuple(_layers(br, f"{where}.branches[{i}]") for i, br in enumerate(raw))
        merge = spec.get("merge", "add")
        if merge not in ("add", "concat"):
            raise SpaceError(f"{where}.merge: must be 'add' or 'concat', got {merge!r}")
        blocks[name] = Block(name, branches, merge)

    macro = need(data, "macro", "")
    stages = need(macro, "stages", "macro.")
    widths = list(macro.get("widths", [1] * len(stages)))
    if not stages or len(widths) != len(stages):
        raise SpaceError(f"{path}: macro.widths must give one width per stage ({len(stages)})")
    known = set(blocks) | {ct.name for ct in cell_types}
    for i, items in enumerate(stages):
        for item in items:
            name, _, reps = str(item).partition("*")
            if name.strip() not in known:
                raise SpaceError(f"{path}: macro.stages[{i}]: unknown block or cell '{name.strip()}' "
                                 f"(known: {', '.join(sorted(known))})")
            r = reps.strip()
            if r and not r.isdigit() and r not in params:
                raise SpaceError(f"{path}: macro.stages[{i}]: repeat '{r}' is not a number or a parameter")
    return CellSpace(str(data.get("name", Path(path).stem)), path, params, ops, tuple(cell_types),
                     blocks, [list(map(str, s)) for s in stages], [int(w) for w in widths])
