"""Layout spaces: where the tasks of a multi-task network share layers and where they branch off.

For T tasks and S backbone stages a layout is a tree written stage by stage: at each stage the
tasks are partitioned into groups, and each partition refines the one before (a group never
re-joins another). Each group gets its own copy of that stage's layers (``nasmtl.arch.compose``).
All-shared (one group everywhere) and fully separate (one group per task from the first stage)
are the two ends.

Canonical string: stages separated by ``/``, groups by ``|``, tasks by ``+``, tasks sorted within a
group and groups sorted within a stage, e.g. ``depth+normal+seg/depth+normal|seg/depth|normal|seg``.

Counting: the chains below one group evolve independently, so the count is a product over groups
of ``g(n, r)``, the number of refining chains of length ``r`` below a group of ``n`` tasks:
``g(n, 0) = 1`` and ``g(n, r)`` sums, over the set partitions of the group, the product of
``g(|block|, r - 1)`` over their blocks. Sampling asks, stage by stage, for a partition with a
weight equal to the number of layouts that continue from it, so every layout is equally likely.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb, prod
from typing import Iterator, Sequence

import numpy as np

from nasmtl.spaces.base import Decide, Prior, SpaceError, rng_decide

Group = tuple[str, ...]
Partition = tuple[Group, ...]

MAX_TASKS = 8
"""Sampling lists all set partitions of the tasks (Bell(8) = 4,140); more tasks are refused."""

_RESERVED = set("+|/;=,() ")


@dataclass(frozen=True)
class Layout:
    """A layout tree: per stage a partition of the tasks, each refining the one before (canonical order)."""

    partitions: tuple[Partition, ...]

    @property
    def n_stages(self) -> int:
        return len(self.partitions)

    def as_lists(self) -> list[list[list[str]]]:
        """The layout in the form ``nasmtl.arch.compose.compose`` takes."""
        return [[list(g) for g in p] for p in self.partitions]

    def branch_stage(self, task: str) -> int:
        """The first stage where ``task`` is alone in its group (``n_stages`` if it never is)."""
        for s, p in enumerate(self.partitions):
            if (task,) in p:
                return s
        return self.n_stages

    def group_of(self, task: str, stage: int) -> Group:
        """The group holding ``task`` at ``stage`` (stage -1: all tasks)."""
        if stage < 0:
            return tuple(sorted(t for g in self.partitions[0] for t in g))
        return next(g for g in self.partitions[stage] if task in g)

    def n_groups(self) -> list[int]:
        """Number of groups (stage copies) at each stage."""
        return [len(p) for p in self.partitions]


def canonical_partition(groups: Sequence[Sequence[str]]) -> Partition:
    """Tasks sorted within each group, groups sorted."""
    return tuple(sorted(tuple(sorted(g)) for g in groups))


def refines(fine: Partition, coarse: Partition) -> bool:
    """Whether every group of ``fine`` lies inside one group of ``coarse``."""
    sets = [set(g) for g in coarse]
    return all(any(set(g) <= c for c in sets) for g in fine)


def meet(a: Partition, b: Partition) -> Partition:
    """The coarsest common refinement of two partitions of the same tasks."""
    return canonical_partition([x for ga in a for gb in b if (x := tuple(set(ga) & set(gb)))])


def set_partitions(items: Sequence[str]) -> Iterator[Partition]:
    """All set partitions of ``items`` (canonical, each once)."""
    items = list(items)
    if not items:
        yield ()
        return
    first, rest = items[0], items[1:]
    for sub in set_partitions(rest):
        yield canonical_partition([(first,), *sub])
        for i in range(len(sub)):
            yield canonical_partition([*sub[:i], (first, *sub[i]), *sub[i + 1:]])


@lru_cache(maxsize=None)
def chains(n: int, r: int) -> int:
    """Number of refining chains of ``r`` partitions below one group of ``n`` tasks."""
    if r == 0 or n <= 1:
        return 1
    return _blocks(n, r - 1)


@lru_cache(maxsize=None)
def _blocks(m: int, r: int) -> int:
    """Sum over set partitions of ``m`` items of the product of ``chains(|block|, r)``."""
    if m == 0:
        return 1
    return sum(comb(m - 1, k - 1) * chains(k, r) * _blocks(m - k, r) for k in range(1, m + 1))


def count_layouts(n_tasks: int, n_stages: int) -> int:
    """The exact number of layouts of ``n_tasks`` tasks over ``n_stages`` stages."""
    return chains(n_tasks, n_stages)


class LayoutSpace:
    """All layouts of ``tasks`` over ``n_stages`` stages, as a ``SearchSpace`` (and ``DecisionSpace``)."""

    def __init__(self, tasks: Sequence[str], n_stages: int) -> None:
        tasks = [str(t) for t in tasks]
        if not tasks:
            raise SpaceError("a layout space needs at least one task")
        if len(set(tasks)) != len(tasks):
            raise SpaceError(f"task names must be distinct, got {tasks}")
        bad = [t for t in tasks if not t or set(t) & _RESERVED]
        if bad:
            raise SpaceError(f"task name(s) {bad} may not be empty or contain any of {''.join(sorted(_RESERVED))!r}")
        if len(tasks) > MAX_TASKS:
            raise SpaceError(f"layout search supports at most {MAX_TASKS} tasks, got {len(tasks)}")
        if int(n_stages) < 1:
            raise SpaceError(f"a layout needs at least one stage, got n_stages={n_stages}")
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.n_stages = int(n_stages)
        self.name = f"layout:{len(tasks)}x{self.n_stages}"
        self._partitions = list(set_partitions(sorted(self.tasks)))
        self._options = [self._part_str(p) for p in self._partitions]

    # ---- named layouts ------------------------------------------------------------------------

    def shared(self) -> Layout:
        """Hard sharing: one group of all tasks at every stage."""
        return Layout(tuple(canonical_partition([self.tasks]) for _ in range(self.n_stages)))

    def separate(self) -> Layout:
        """Fully separate networks: one group per task from the first stage."""
        return Layout(tuple(canonical_partition([[t] for t in self.tasks]) for _ in range(self.n_stages)))

    def make(self, partitions: Sequence[Sequence[Sequence[str]]]) -> Layout:
        """A checked, canonical layout from per-stage groups; ``SpaceError`` if it is not one."""
        if len(partitions) != self.n_stages:
            raise SpaceError(f"layout has {len(partitions)} stage(s), the space has {self.n_stages}")
        out: list[Partition] = []
        prev = canonical_partition([self.tasks])
        for s, groups in enumerate(partitions):
            p = canonical_partition(groups)
            names = sorted(t for g in p for t in g)
            if names != sorted(self.tasks) or any(not g for g in p):
                raise SpaceError(f"stage {s} of the layout {self._str(partitions)!r} does not partition the "
                                 f"tasks {', '.join(sorted(self.tasks))}")
            if not refines(p, prev):
                raise SpaceError(f"stage {s} of the layout {self._str(partitions)!r} re-joins groups that "
                                 f"were split before it")
            out.append(p)
            prev = p
        return Layout(tuple(out))

    def all_layouts(self) -> Iterator[Layout]:
        """Every layout once (use only where ``size()`` is small)."""
        def walk(prefix: list[Partition], prev: Partition) -> Iterator[Layout]:
            if len(prefix) == self.n_stages:
                yield Layout(tuple(prefix))
                return
            for p in self._partitions:
                if refines(p, prev):
                    yield from walk([*prefix, p], p)

        yield from walk([], canonical_partition([self.tasks]))

    # ---- SearchSpace --------------------------------------------------------------------------

    def size(self) -> float:
        """The exact number of layouts."""
        return float(count_layouts(len(self.tasks), self.n_stages))

    def sample_with(self, decide: Decide) -> Layout:
        """Stage by stage, a partition of the tasks (key ``layout.s<i>``, options: all partitions).

        The weights make the draw uniform over layouts: a partition that refines the stage above
        weighs as many layouts as continue from it, the others weigh 0. An outside optimiser may
        still pick one that does not refine; it is then met with the stage above.
        """
        prev = canonical_partition([self.tasks])
        out: list[Partition] = []
        for s in range(self.n_stages):
            left = self.n_stages - s - 1
            weights = [prod(chains(len(g), left) for g in p) if refines(p, prev) else 0 for p in self._partitions]
            choice = decide(f"layout.s{s}", self._options, weights)
            if choice not in self._options:
                raise SpaceError(f"decision layout.s{s}: {choice!r} is not a partition of the tasks")
            p = meet(self._partitions[self._options.index(choice)], prev)
            out.append(p)
            prev = p
        return Layout(tuple(out))

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> Layout:
        """A layout drawn uniformly over all valid trees (reweighted by ``prior`` over ``choices`` keys)."""
        return self.sample_with(rng_decide(rng, prior))

    def mutate(self, x: Layout, rng: np.random.Generator) -> Layout:
        """Split a group, merge two sibling groups, or move where one task branches off (uniform over kinds)."""
        moves = []
        splits = [(s, g) for s, p in enumerate(x.partitions) for g in p if len(g) > 1]
        merges = [(s, a, b) for s, p in enumerate(x.partitions) for i, a in enumerate(p) for b in p[i + 1:]
                  if s == 0 or self._parent(x, s, a) == self._parent(x, s, b)]
        if splits:
            moves.append("split")
        if merges:
            moves.append("merge")
        if len(self.tasks) > 1:
            moves.append("move")
        if not moves:
            return x
        kind = moves[int(rng.integers(len(moves)))]
        if kind == "split":
            s, g = splits[int(rng.integers(len(splits)))]
            return self._split(x, s, g, rng)
        if kind == "merge":
            s, a, b = merges[int(rng.integers(len(merges)))]
            parts = list(x.partitions)
            parts[s] = canonical_partition([q for q in parts[s] if q not in (a, b)] + [a + b])
            return self.make(parts)
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        d = x.branch_stage(task)
        targets = [k for k in range(self.n_stages + 1) if k != d]
        return self._move(x, task, targets[int(rng.integers(len(targets)))], rng)

    def crossover(self, a: Layout, b: Layout, rng: np.random.Generator) -> Layout:
        """Stages before a random cut from ``a``; below it, ``b``'s partitions met with ``a``'s last one."""
        if self.n_stages == 1:
            return a if rng.random() < 0.5 else b
        c = int(rng.integers(1, self.n_stages))
        top = a.partitions[c - 1]
        return self.make([*a.partitions[:c], *(meet(p, top) for p in b.partitions[c:])])

    def encode(self, x: Layout) -> str:
        """The canonical string (stages ``/``, groups ``|``, tasks ``+``)."""
        return self._str(x.partitions)

    def decode(self, s: str) -> Layout:
        """Inverse of ``encode``; ``SpaceError`` for a string that is not a layout of this space."""
        if not isinstance(s, str) or not s.strip():
            raise SpaceError(f"layout string {s!r} is empty")
        stages = [[[t.strip() for t in g.split("+")] for g in st.split("|")] for st in s.strip().split("/")]
        unknown = sorted({t for st in stages for g in st for t in g} - set(self.tasks))
        if unknown:
            raise SpaceError(f"layout string {s!r}: unknown task(s) {', '.join(unknown)} "
                             f"(tasks: {', '.join(self.tasks)})")
        return self.make(stages)

    def choices(self, x: Layout) -> dict[str, str]:
        """``{"layout.s<i>": partition at stage i}`` (the keys of ``sample_with``)."""
        return {f"layout.s{s}": self._part_str(p) for s, p in enumerate(x.partitions)}

    # ---- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _part_str(p: Partition) -> str:
        return "|".join("+".join(g) for g in p)

    def _str(self, partitions: Sequence[Sequence[Sequence[str]]]) -> str:
        return "/".join(self._part_str(canonical_partition(p)) for p in partitions)

    @staticmethod
    def _parent(x: Layout, s: int, g: Group) -> Group:
        return x.group_of(g[0], s - 1)

    def _split(self, x: Layout, s: int, g: Group, rng: np.random.Generator) -> Layout:
        """Split ``g`` at stage ``s`` in two (a uniform bipartition); deeper groups follow the cut."""
        rest = list(g[1:])
        while True:
            mask = rng.integers(0, 2, size=len(rest))
            side = {g[0], *(t for t, m in zip(rest, mask) if m)}
            if len(side) < len(g):
                break
        parts = list(x.partitions)
        for t in range(s, self.n_stages):
            new: list[Group] = []
            for q in parts[t]:
                if set(q) <= set(g):
                    new.extend(h for h in (tuple(u for u in q if u in side), tuple(u for u in q if u not in side)) if h)
                else:
                    new.append(q)
            parts[t] = canonical_partition(new)
        return self.make(parts)

    def _move(self, x: Layout, task: str, to: int, rng: np.random.Generator) -> Layout:
        """Make ``task`` branch off (become a group of its own) at stage ``to`` instead of where it does now."""
        d = x.branch_stage(task)
        parts = [list(p) for p in x.partitions]
        if to < d:
            for s in range(to, d):
                parts[s] = [h for q in parts[s] for h in ((tuple(u for u in q if u != task),) if task in q else (q,))]
                parts[s].append((task,))
        else:
            host: set[str] = set(x.group_of(task, d - 1)) - {task}
            for s in range(d, to):
                cands = [q for q in parts[s] if q != (task,) and set(q) <= host]
                pick = cands[int(rng.integers(len(cands)))]
                parts[s] = [q for q in parts[s] if q not in ((task,), pick)] + [(*pick, task)]
                host = set(pick)
        return self.make(parts)
