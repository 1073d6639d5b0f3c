"""IR -> ``torch.nn.Module``: one submodule per op node, evaluated in topological order."""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from nasmtl.arch.ir import INPUT, Arch
from nasmtl.arch.registry import get_op


def _key(node: str) -> str:
    """A ModuleDict-safe key for a node id."""
    return re.sub(r"[^0-9A-Za-z_]", "_", node)


class GraphModule(nn.Module):
    """Runs an Arch: ``forward(x) -> {output name: tensor}``."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.input_shape = arch.input_shape
        self.output_names = list(arch.outputs)
        self.layers = nn.ModuleDict()
        self._plan: list[tuple[str, str, list[str]]] = []
        keys: dict[str, str] = {INPUT: INPUT}
        for n in arch.op_nodes():
            key = _key(n)
            while key in self.layers or key == INPUT:
                key += "_"
            keys[n] = key
            data = arch.graph.nodes[n]
            ins = arch.inputs_of(n)
            in_shapes = [arch.graph.nodes[u]["shape"] for u in ins]
            self.layers[key] = get_op(data["op"]).torch(in_shapes, data["shape"], data["attrs"])
            self._plan.append((key, data["op"], [keys[u] for u in ins]))
        self._outputs = [(name, keys[node]) for name, node in arch.outputs.items()]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        env: dict[str, torch.Tensor] = {INPUT: x}
        for key, _, ins in self._plan:
            env[key] = self.layers[key](*(env[u] for u in ins))
        return {name: env[key] for name, key in self._outputs}


def to_torch(arch: Arch, seed: int | None = None) -> GraphModule:
    """Build the torch module of an Arch (weights initialised under ``seed`` when given)."""
    if seed is None:
        return GraphModule(arch)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GraphModule(arch)
