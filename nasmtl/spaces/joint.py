"""The joint design space: architecture × layout × quantization policy, one ``Design`` per candidate.

A ``Design`` has one canonical string ``arch=<arch string>;layout=<layout string>[;quant=<policy>]``
(parts in that order; layout and policy strings never contain ``;``, so the arch string may hold
anything). Parts named in ``fixed`` are held at their value: never sampled, mutated or crossed.

Stages: the layout space has a fixed number of stages S, while an architecture space may give
designs with another number of top-level stages K (a grammar whose start rule has alternatives of
different lengths). The rule that fits a K-stage backbone to an S-stage layout:

- K >= S: consecutive backbone stages are chained into S stages, stage k into stage ``k * S // K``
  (``nasmtl.arch.compose.merge_stages``), so every layout stage has layers to copy;
- K < S: backbone stage k takes the partition of layout stage ``(k + 1) * S // K - 1`` (the last
  layout stage mapped onto it), so layouts differing only at skipped stages build the same network.

Either way the built network's stages are named ``s0 .. s{min(K, S) - 1}`` and the quantization
policy's group i covers stage i (heads: the last group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nasmtl.arch.compose import compose, merge_stages
from nasmtl.arch.ir import Arch
from nasmtl.arch.registry import Shape
from nasmtl.spaces.base import Decide, Prior, SpaceError, design_options
from nasmtl.spaces.layout import Layout, LayoutSpace

PARTS = ("arch", "layout", "quant")
_SEP = {p: f";{p}=" for p in PARTS}


@dataclass(frozen=True)
class Design:
    """One candidate of the joint space: an architecture, a layout and a quantization policy (or None)."""

    arch: Any
    layout: Layout
    quant: Any = None


@dataclass
class FixedArchSpace:
    """An architecture space of one hand-written backbone (``stages_fn(input_shape) -> stages``)."""

    label: str
    stages_fn: Callable[[Shape], list[Arch]]

    @property
    def name(self) -> str:
        return f"fixed:{self.label}"

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> str:
        """The one design."""
        return self.label

    def sample_with(self, decide: Decide) -> str:
        """The one design (no decisions)."""
        return self.label

    def mutate(self, x: str, rng: np.random.Generator) -> str:
        return self.label

    def crossover(self, a: str, b: str, rng: np.random.Generator) -> str:
        return self.label

    def encode(self, x: str) -> str:
        return self.label

    def decode(self, s: str) -> str:
        """The label itself; ``SpaceError`` for any other string."""
        if s != self.label:
            raise SpaceError(f"space '{self.name}' has the one design {self.label!r}, got {s!r}")
        return self.label

    def choices(self, x: str) -> dict[str, str]:
        return {}

    def size(self) -> float:
        return 1.0

    def stages(self, x: str, input_shape: Shape) -> list[Arch]:
        """The backbone's stages on ``input_shape``."""
        return self.stages_fn(tuple(input_shape))


class JointSpace:
    """The product space of ``arch_space`` × ``layout_space`` × ``quant_space`` (``None``: no quantization part).

    ``fixed`` maps part names to values (designs of that part, or their strings). The space offers
    ``sample_with`` (an instance attribute) only when every searched part does.
    """

    def __init__(self, arch_space: Any, layout_space: LayoutSpace, quant_space: Any | None = None,
                 fixed: Mapping[str, Any] | None = None) -> None:
        self.arch_space = arch_space
        self.layout_space = layout_space
        self.quant_space = quant_space
        self.parts: tuple[str, ...] = tuple(p for p in PARTS if p != "quant" or quant_space is not None)
        fixed = dict(fixed or {})
        unknown = [k for k in fixed if k not in self.parts]
        if unknown:
            raise SpaceError(f"joint space: cannot fix part(s) {', '.join(unknown)} (parts: {', '.join(self.parts)})")
        self.fixed: dict[str, Any] = {k: self.space(k).decode(v) if isinstance(v, str) else v
                                      for k, v in fixed.items()}
        self.searched: tuple[str, ...] = tuple(p for p in self.parts if p not in self.fixed)
        if all(hasattr(self.space(p), "sample_with") for p in self.searched):
            self.sample_with = self._sample_with
        self.name = "joint(" + "×".join(self.space(p).name for p in self.parts) + ")"

    @property
    def n_stages(self) -> int:
        """The number of layout stages S (also the number of quantization groups)."""
        return self.layout_space.n_stages

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.layout_space.tasks

    def space(self, part: str) -> Any:
        """The space of one part."""
        return {"arch": self.arch_space, "layout": self.layout_space, "quant": self.quant_space}[part]

    def _make(self, values: Mapping[str, Any]) -> Design:
        v = {**values, **self.fixed}
        return Design(v["arch"], v["layout"], v.get("quant"))

    # ---- SearchSpace --------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> Design:
        """Each searched part sampled on its own (``prior`` keys prefixed ``part:``)."""
        return self._make({p: self.space(p).sample(rng, _sub_prior(prior, p)) for p in self.searched})

    def _sample_with(self, decide: Decide) -> Design:
        """Each searched part asks ``decide`` with keys prefixed ``part:``."""
        def scoped(p: str) -> Decide:
            return lambda key, options, weights: decide(f"{p}:{key}", options, weights)

        return self._make({p: self.space(p).sample_with(scoped(p)) for p in self.searched})

    def mutate(self, x: Design, rng: np.random.Generator) -> Design:
        """Mutate one searched part (probability 0.7) or each with probability 0.5 (at least one)."""
        if not self.searched:
            return x
        for _ in range(10):
            if len(self.searched) == 1 or rng.random() < 0.7:
                chosen = [self.searched[int(rng.integers(len(self.searched)))]]
            else:
                chosen = [p for p in self.searched if rng.random() < 0.5] or [
                    self.searched[int(rng.integers(len(self.searched)))]]
            values = {p: getattr(x, p) for p in self.parts}
            for p in chosen:
                values[p] = self.space(p).mutate(values[p], rng)
            child = self._make(values)
            if self.encode(child) != self.encode(x):
                return child
        return x

    def crossover(self, a: Design, b: Design, rng: np.random.Generator) -> Design:
        """Part-wise: each searched part from ``a``, from ``b``, or the part space's own crossover."""
        values = {}
        for p in self.parts:
            pa, pb = getattr(a, p), getattr(b, p)
            r = rng.random()
            if p in self.fixed or r < 1 / 3:
                values[p] = pa
            elif r < 2 / 3:
                values[p] = pb
            else:
                try:
                    values[p] = self.space(p).crossover(pa, pb, rng)
                except NotImplementedError:
                    values[p] = pa if rng.random() < 0.5 else pb
        return self._make(values)

    def encode(self, x: Design) -> str:
        """``arch=...;layout=...[;quant=...]``."""
        parts = [f"{p}={self.space(p).encode(getattr(x, p))}" for p in self.parts]
        return ";".join(parts)

    def decode(self, s: str) -> Design:
        """Inverse of ``encode``; ``SpaceError`` naming the part that does not parse."""
        if not isinstance(s, str) or not s.startswith("arch="):
            raise SpaceError(f"joint design string must start with 'arch=', got {str(s)[:60]!r}")
        rest, values = s, {}
        for p in reversed(self.parts[1:]):
            i = rest.rfind(_SEP[p])
            if i < 0:
                raise SpaceError(f"joint design string has no '{_SEP[p][1:]}' part: {s[:80]!r}")
            values[p] = rest[i + len(_SEP[p]):]
            rest = rest[:i]
        values["arch"] = rest[len("arch="):]
        out = {}
        for p in self.parts:
            try:
                out[p] = self.space(p).decode(values[p])
            except SpaceError as e:
                raise SpaceError(f"joint design string, part {p}: {e}") from None
        for p, v in self.fixed.items():
            if self.space(p).encode(out[p]) != self.space(p).encode(v):
                raise SpaceError(f"joint design string: part {p} is fixed to {self.space(p).encode(v)!r}, "
                                 f"got {values[p]!r}")
        return Design(out["arch"], out["layout"], out.get("quant"))

    def choices(self, x: Design) -> dict[str, str]:
        """Decisions of every part, keys prefixed ``part:``."""
        out: dict[str, str] = {}
        for p in self.parts:
            out.update({f"{p}:{k}": str(v) for k, v in self.space(p).choices(getattr(x, p)).items()})
        return out

    def decision_options(self, x: Design) -> dict[str, tuple[str, ...]]:
        """Options of every part's decisions, keys prefixed ``part:`` as in ``choices``."""
        out: dict[str, tuple[str, ...]] = {}
        for p in self.parts:
            out.update({f"{p}:{k}": v for k, v in design_options(self.space(p), getattr(x, p)).items()})
        return out

    def size(self) -> float:
        """The product of the searched parts' sizes."""
        total = 1.0
        for p in self.searched:
            total *= float(self.space(p).size())
        return total

    # ---- building -----------------------------------------------------------------------------

    def stages(self, x: Design, input_shape: Shape) -> list[Arch]:
        """The backbone of ``x.arch`` fitted to the layout's stages (see the module docstring)."""
        st = self.arch_space.stages(x.arch, tuple(input_shape))
        return merge_stages(st, self.n_stages) if len(st) >= self.n_stages else st

    def layout_for(self, x: Design, n_built: int) -> list[list[list[str]]]:
        """The layout partitions used for a backbone of ``n_built`` stages."""
        parts = x.layout.as_lists()
        if n_built >= self.n_stages:
            return parts
        return [parts[(k + 1) * self.n_stages // n_built - 1] for k in range(n_built)]

    def build(self, x: Design, input_shape: Shape, heads: Mapping[str, int], head_pool: str = "global") -> Arch:
        """The multi-task network of ``x``: stages copied per task group, one head per task."""
        st = self.stages(x, input_shape)
        return compose(st, self.layout_for(x, len(st)), heads, head_pool)


def _sub_prior(prior: Prior | None, part: str) -> Prior | None:
    if not prior:
        return None
    pre = f"{part}:"
    sub = {k[len(pre):]: v for k, v in prior.items() if k.startswith(pre)}
    return sub or None


def stage_count(arch_space: Any, input_shape: Shape, rng: np.random.Generator, draws: int = 8) -> int:
    """The most top-level stages among a few sampled designs (the default S of a layout search)."""
    return max(len(arch_space.stages(arch_space.sample(rng), tuple(input_shape))) for _ in range(draws))


def joint_from_parts(arch_space: Any, tasks: Sequence[str], n_stages: int, quant_space: Any | None = None,
                     fixed: Mapping[str, Any] | None = None) -> JointSpace:
    """A joint space over a new layout space of ``tasks`` and ``n_stages``."""
    return JointSpace(arch_space, LayoutSpace(tasks, n_stages), quant_space, fixed)


def build_network(space: Any, design: Any, input_shape: Shape, heads: Mapping[str, int],
                  head_pool: str = "global") -> Arch:
    """The lowered multi-task network of a design, as the search trains it: a joint design with its
    layout, any other design with all stages shared (im2col-linear-col2im chains become convolutions)."""
    from nasmtl.arch.compose import shared_layout
    from nasmtl.arch.lower import lower_patch_convs

    if isinstance(design, Design):
        return lower_patch_convs(space.build(design, tuple(input_shape), heads, head_pool))
    stages = space.stages(design, tuple(input_shape))
    return lower_patch_convs(compose(stages, shared_layout(list(heads), len(stages)), heads, head_pool))
