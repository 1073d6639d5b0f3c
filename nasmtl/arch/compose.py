"""Compose backbone stages and a task layout into one multi-task Arch.

A layout gives, per stage, a partition of the tasks into groups, each partition refining the
one before. Each group gets its own copy of that stage; each task a head after the last stage.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from nasmtl.arch.ir import INPUT, Arch, ArchBuilder, Cost, add_head, arch_cost
from nasmtl.arch.registry import ShapeError

Partition = Sequence[Sequence[str]]
"""Groups of task names at one stage."""


def shared_layout(tasks: Sequence[str], n_stages: int) -> list[list[list[str]]]:
    """Hard sharing: one group of all tasks at every stage."""
    return [[list(tasks)] for _ in range(n_stages)]


def separate_layout(tasks: Sequence[str], n_stages: int) -> list[list[list[str]]]:
    """Fully separate networks: one group per task from the first stage."""
    return [[[t] for t in tasks] for _ in range(n_stages)]


def group_name(group: Sequence[str]) -> str:
    """A readable, order-independent name for a task group."""
    return "+".join(sorted(group))


def _copy_stage(b: ArchBuilder, stage: Arch, src: str, prefix: str) -> str:
    """Copy a stage's op nodes into ``b`` after node ``src``; returns the copy of its output."""
    names = {INPUT: src}
    for n in stage.op_nodes():
        data = stage.graph.nodes[n]
        names[n] = b.add(data["op"], *(names[u] for u in stage.inputs_of(n)),
                         name=f"{prefix}{n}", **data["attrs"])
    return names[stage.outputs["out"]]


def compose(stages: Sequence[Arch], layout: Sequence[Partition], heads: Mapping[str, int],
            head_pool: str = "global") -> Arch:
    """One Arch with a head per task (``heads``: task -> number of outputs; ``head_pool``: see ``add_head``)."""
    if len(layout) != len(stages):
        raise ShapeError(f"layout has {len(layout)} stage(s) but the backbone has {len(stages)}")
    if not stages:
        raise ShapeError("a backbone needs at least one stage")
    tasks = set(heads)
    b = ArchBuilder(stages[0].input_shape)
    current = {group_name(sorted(tasks)): (frozenset(tasks), INPUT)}
    for s, (stage, partition) in enumerate(zip(stages, layout)):
        seen = [t for g in partition for t in g]
        if sorted(seen) != sorted(tasks):
            raise ShapeError(f"stage {s} of the layout does not partition the tasks {sorted(tasks)}: {partition}")
        nxt = {}
        for group in partition:
            members = frozenset(group)
            parents = [node for ts, node in current.values() if members <= ts]
            if not parents:
                raise ShapeError(f"stage {s}: group {sorted(group)} does not refine the groups above it")
            name = group_name(group)
            out = _copy_stage(b, stage, parents[0], f"s{s}.{name}.")
            nxt[name] = (members, out)
        current = nxt
    for ts, node in current.values():
        for task in sorted(ts):
            add_head(b, node, task, heads[task], pool=head_pool)
    ordered = {t: b.outputs[t] for t in heads}
    b.outputs = ordered
    return b.build()


def merge_stages(stages: Sequence[Arch], n: int) -> list[Arch]:
    """``n`` stages from ``len(stages) >= n``: consecutive stages chained, stage k into group ``k * n // len``."""
    if not 1 <= n <= len(stages):
        raise ShapeError(f"cannot merge {len(stages)} stage(s) into {n}")
    out = []
    for j in range(n):
        members = [st for k, st in enumerate(stages) if k * n // len(stages) == j]
        if len(members) == 1:
            out.append(members[0])
            continue
        b = ArchBuilder(members[0].input_shape)
        x = INPUT
        for k, st in enumerate(members):
            x = _copy_stage(b, st, x, f"m{k}.")
        b.output("out", x)
        out.append(b.build())
    return out


def task_costs(arch: Arch) -> dict[str, Cost]:
    """Params and MACs of the path from the input to each task's output (running that task alone)."""
    return {task: arch_cost(arch, [task]) for task in arch.outputs}
