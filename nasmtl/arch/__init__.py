"""The architecture IR: op registry, DAG of typed ops with shapes and costs, IR -> torch, pictures."""

from nasmtl.arch.ir import (
    INPUT,
    Arch,
    ArchBuilder,
    Cost,
    activation_elements,
    add_head,
    arch_cost,
    depth,
    from_dict,
    infer_shapes,
    node_costs,
    to_dict,
    validate,
)
from nasmtl.arch.draw import draw_arch, text_tree
from nasmtl.arch.registry import REQUIRED, OpError, OpSpec, Shape, ShapeError, get_op, has_op, op_names, register
from nasmtl.arch.torch_build import GraphModule, to_torch

__all__ = [
    "INPUT", "Arch", "ArchBuilder", "Cost", "activation_elements", "add_head", "arch_cost", "depth", "from_dict",
    "infer_shapes", "node_costs", "to_dict", "validate", "REQUIRED", "OpError", "OpSpec", "Shape",
    "ShapeError", "get_op", "has_op", "op_names", "register", "GraphModule", "to_torch", "draw_arch", "text_tree",
]
