"""The architecture IR: op registry, DAG of typed ops with shapes and costs, IR -> torch, pictures."""

from nasmtl.arch.compose import compose, merge_stages, separate_layout, shared_layout, task_costs
from nasmtl.arch.draw import DRAW_FORMATS, draw_arch, text_tree
from nasmtl.arch.ir import (
    HEAD_POOLS,
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
from nasmtl.arch.lower import lower_patch_convs
from nasmtl.arch.registry import REQUIRED, OpError, OpSpec, Shape, ShapeError, get_op, has_op, op_names, register
from nasmtl.arch.torch_build import GraphModule, to_torch

__all__ = [
    "HEAD_POOLS", "INPUT", "Arch", "ArchBuilder", "Cost", "activation_elements", "add_head", "arch_cost", "depth",
    "from_dict", "infer_shapes", "node_costs", "to_dict", "validate", "REQUIRED", "OpError", "OpSpec", "Shape",
    "ShapeError", "get_op", "has_op", "op_names", "register", "GraphModule", "to_torch", "DRAW_FORMATS", "draw_arch",
    "text_tree", "compose", "merge_stages", "separate_layout", "shared_layout", "task_costs", "lower_patch_convs",
]
