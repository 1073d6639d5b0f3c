"""Hand-written reference networks built from the IR (the foundation's worked example)."""

from __future__ import annotations

from typing import Mapping

from nasmtl.arch.compose import compose
from nasmtl.arch.ir import Arch, ArchBuilder
from nasmtl.arch.registry import Shape


def _stage(input_shape: Shape, layers: list[tuple[str, dict]]) -> Arch:
    b = ArchBuilder(input_shape)
    b.output("out", b.chain(b.input, layers))
    return b.build()


def two_branch_cnn_stages(input_shape: Shape, width: int = 32) -> list[Arch]:
    """A shared conv stem and a per-task conv block: the two stages of the example CNN.

    The block ends in a flattened small grid and a linear layer rather than global pooling, so
    each head still knows where in the canvas a feature was (left digit vs right digit).
    """
    stem = _stage(input_shape, [("conv", {"out": width, "k": 3}), ("batchnorm", {}), ("relu", {}),
                                ("maxpool", {"k": 2, "stride": 2})])
    block = _stage(stem.shape(stem.outputs["out"]), [
        ("conv", {"out": 2 * width, "k": 3}), ("batchnorm", {}), ("relu", {}),
        ("maxpool", {"k": 2, "stride": 2}),
        ("conv", {"out": 2 * width, "k": 3}), ("batchnorm", {}), ("relu", {}),
        ("maxpool", {"k": 2, "stride": 2}), ("flatten", {}), ("linear", {"out": 4 * width}), ("relu", {}),
    ])
    return [stem, block]


def two_branch_cnn(input_shape: Shape, heads: Mapping[str, int], width: int = 32) -> Arch:
    """Shared stem, then one conv branch and head per task."""
    stages = two_branch_cnn_stages(input_shape, width)
    tasks = list(heads)
    layout = [[tasks], [[t] for t in tasks]]
    return compose(stages, layout, heads)


def shared_mlp_stages(input_shape: Shape, width: int = 64) -> list[Arch]:
    """Two dense stages of ``width`` units (linear, batch norm, ReLU each), flattening first when needed."""
    first: list[tuple[str, dict]] = [("flatten", {})] if len(input_shape) > 1 else []
    s0 = _stage(input_shape, first + [("linear", {"out": width}), ("batchnorm", {}), ("relu", {})])
    s1 = _stage(s0.shape(s0.outputs["out"]), [("linear", {"out": width}), ("batchnorm", {}), ("relu", {})])
    return [s0, s1]


def shared_mlp(input_shape: Shape, heads: Mapping[str, int], width: int = 64) -> Arch:
    """The usual hand design for multi-task tabular data: two shared dense layers, one linear head per task."""
    stages = shared_mlp_stages(input_shape, width)
    tasks = list(heads)
    return compose(stages, [[tasks], [tasks]], heads)


BUILTIN_BASELINES = {"two-branch-cnn": two_branch_cnn, "shared-mlp": shared_mlp}
"""Hand designs a run can name in ``[search] baselines`` (``name(input_shape, heads) -> Arch``)."""
