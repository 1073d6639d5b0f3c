"""The architecture IR: a networkx DiGraph of typed op nodes with inferred shapes.

Node attributes: ``op`` (registry name), ``attrs`` (resolved op attributes), ``shape`` (output
shape without batch, set by :func:`infer_shapes`), ``inputs`` (the input nodes in argument
order; one node may appear twice, as in ``x @ x^T``). Edges mirror ``inputs``. ``Arch.outputs`` names the output nodes (one per task).
The IR knows nothing of search, data or ONNX.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import networkx as nx

from nasmtl.arch import ops as _ops  # noqa: F401  (registers the built-in ops)
from nasmtl.arch.registry import OpError, Shape, ShapeError, get_op

INPUT = "input"


@dataclass
class Cost:
    """Parameter count and multiply-accumulates (per example)."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs)


@dataclass
class Arch:
    """A network: a DAG of op nodes from one input to named outputs."""

    graph: nx.DiGraph
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def input_shape(self) -> Shape:
        return tuple(self.graph.nodes[INPUT]["attrs"]["shape"])

    def shape(self, node: str) -> Shape:
        """The inferred output shape of a node."""
        return self.graph.nodes[node]["shape"]

    def inputs_of(self, node: str) -> list[str]:
        """The node's input nodes in argument order."""
        return list(self.graph.nodes[node].get("inputs", ()))

    def op_nodes(self) -> list[str]:
        """All nodes but the input, in topological order."""
        return [n for n in nx.topological_sort(self.graph) if n != INPUT]

    def copy(self) -> "Arch":
        return Arch(self.graph.copy(), dict(self.outputs))


class ArchBuilder:
    """Write an Arch by hand: ``x = b.add("conv", b.input, out=32)``; ``b.output("left", y)``."""

    def __init__(self, input_shape: Iterable[int]) -> None:
        self.graph = nx.DiGraph()
        shape = tuple(int(v) for v in input_shape)
        self.graph.add_node(INPUT, op="input", attrs={"shape": shape}, shape=shape)
        self.outputs: dict[str, str] = {}
        self._count = 0

    @property
    def input(self) -> str:
        return INPUT

    def add(self, op: str, *inputs: str, name: str | None = None, **attrs: Any) -> str:
        """Add a node applying ``op`` to ``inputs``; returns its id."""
        spec = get_op(op)
        for u in inputs:
            if u not in self.graph:
                raise OpError(f"input node '{u}' of new {op} node does not exist")
        if name is None:
            self._count += 1
            name = f"{op}_{self._count}"
        if name in self.graph:
            raise OpError(f"node '{name}' already exists")
        resolved = spec.resolve(attrs)
        ins = [self.graph.nodes[u]["shape"] for u in inputs]
        shape = _apply_rule(name, op, resolved, ins)
        self.graph.add_node(name, op=op, attrs=resolved, shape=shape, inputs=list(inputs))
        for u in inputs:
            self.graph.add_edge(u, name)
        return name

    def shape(self, node: str) -> Shape:
        """The output shape of a node added so far."""
        return self.graph.nodes[node]["shape"]

    def chain(self, x: str, layers: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
        """Apply a sequence of (op, attrs) layers to ``x``; returns the last node."""
        for op, attrs in layers:
            x = self.add(op, x, **attrs)
        return x

    def output(self, name: str, node: str) -> None:
        """Mark ``node`` as the output called ``name``."""
        if node not in self.graph:
            raise OpError(f"output node '{node}' does not exist")
        self.outputs[name] = node

    def build(self) -> Arch:
        """Check the graph and infer all shapes."""
        arch = Arch(self.graph, dict(self.outputs))
        validate(arch)
        infer_shapes(arch)
        return arch


def validate(arch: Arch) -> None:
    """Structural checks: a DAG with one input, known ops, outputs marked, nothing dangling."""
    g = arch.graph
    if INPUT not in g:
        raise ShapeError("graph has no input node")
    if not nx.is_directed_acyclic_graph(g):
        raise ShapeError(f"graph has a cycle: {nx.find_cycle(g)}")
    if not arch.outputs:
        raise ShapeError("graph has no outputs")
    for n in g.nodes:
        if n != INPUT:
            get_op(g.nodes[n]["op"])
    needed = set().union(*(nx.ancestors(g, o) | {o} for o in arch.outputs.values()))
    unused = [n for n in g.nodes if n not in needed]
    if unused:
        raise ShapeError(f"node(s) {', '.join(sorted(unused))} feed no output")


def infer_shapes(arch: Arch) -> None:
    """Run every node's shape rule in topological order; errors name the node."""
    g = arch.graph
    for n in nx.topological_sort(g):
        data = g.nodes[n]
        if n == INPUT:
            data["shape"] = tuple(data["attrs"]["shape"])
            continue
        ins = [g.nodes[u]["shape"] for u in arch.inputs_of(n)]
        data["shape"] = _apply_rule(n, data["op"], data["attrs"], ins)


def _apply_rule(node: str, op: str, attrs: Mapping[str, Any], ins: list[Shape]) -> Shape:
    """Run one op's shape rule, re-raising any failure as a ShapeError naming the node."""
    spec = get_op(op)
    try:
        spec.check_arity(len(ins))
        return tuple(int(v) for v in spec.shape(ins, attrs))
    except (ShapeError, KeyError, TypeError, ValueError) as e:
        raise ShapeError(f"node '{node}' ({op}) with input shape(s) "
                         f"{', '.join(map(str, ins)) or 'none'}: {e}") from None


def node_costs(arch: Arch) -> dict[str, Cost]:
    """Params and MACs of each op node (shapes must be inferred)."""
    g = arch.graph
    out: dict[str, Cost] = {}
    for n in arch.op_nodes():
        spec = get_op(g.nodes[n]["op"])
        ins = [g.nodes[u]["shape"] for u in arch.inputs_of(n)]
        o, a = g.nodes[n]["shape"], g.nodes[n]["attrs"]
        out[n] = Cost(int(spec.params(ins, o, a)), int(spec.macs(ins, o, a)))
    return out


def arch_cost(arch: Arch, outputs: Iterable[str] | None = None) -> Cost:
    """Total cost of the nodes needed for ``outputs`` (all outputs by default).

    With one output name this is the cost of running one task alone.
    """
    names = list(arch.outputs) if outputs is None else list(outputs)
    needed: set[str] = set()
    for name in names:
        node = arch.outputs[name]
        needed |= nx.ancestors(arch.graph, node) | {node}
    total = Cost()
    for n, c in node_costs(arch).items():
        if n in needed:
            total = total + c
    return total


def activation_elements(arch: Arch) -> int:
    """Elements of all op nodes' outputs for one input: a bound on what a forward pass holds per sample."""
    g = arch.graph
    return sum(math.prod(g.nodes[n]["shape"]) for n in arch.op_nodes())


def depth(arch: Arch) -> int:
    """Number of op nodes on the longest input-to-output path."""
    return int(nx.dag_longest_path_length(arch.graph))


def to_dict(arch: Arch) -> dict[str, Any]:
    """A JSON-ready description (nodes in topological order)."""
    nodes = []
    for n in nx.topological_sort(arch.graph):
        d = arch.graph.nodes[n]
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["attrs"].items()}
        nodes.append({"id": n, "op": d["op"], "attrs": attrs, "inputs": arch.inputs_of(n)})
    return {"nodes": nodes, "outputs": dict(arch.outputs)}


def from_dict(data: Mapping[str, Any]) -> Arch:
    """Inverse of :func:`to_dict`."""
    nodes = list(data["nodes"])
    first = nodes[0]
    if first["op"] != "input":
        raise ShapeError("the first node must be the input")
    b = ArchBuilder(first["attrs"]["shape"])
    for nd in nodes[1:]:
        b.add(nd["op"], *nd["inputs"], name=nd["id"], **nd["attrs"])
    for name, node in data["outputs"].items():
        b.output(name, node)
    return b.build()


HEAD_POOLS = ("global", "grid")
"""How a head reduces an image or token map: global pooling, or a coarse 2x2 grid kept in place."""


def add_head(b: ArchBuilder, x: str, task: str, n_outputs: int, pool: str = "global") -> str:
    """A task head on node ``x``: pooling when it is not a vector, then linear.

    ``pool="global"`` averages over all positions; ``"grid"`` average-pools an image to about 2x2
    and flattens it, so a head still sees where a feature was (e.g. which digit is on the left).
    """
    if pool not in HEAD_POOLS:
        raise ValueError(f"unknown head pooling {pool!r} (one of {', '.join(HEAD_POOLS)})")
    shape = b.shape(x)
    if pool == "grid" and len(shape) == 3 and min(shape[1], shape[2]) >= 2:
        k = min(shape[1], shape[2]) // 2
        x = b.add("avgpool", x, name=f"{task}_grid", k=k, stride=k)
        x = b.add("flatten", x, name=f"{task}_flat")
    elif len(shape) > 1:
        x = b.add("globalpool", x, name=f"{task}_pool")
    y = b.add("linear", x, name=f"{task}_head", out=n_outputs)
    b.output(task, y)
    return y
