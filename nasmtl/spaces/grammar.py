"""Grammar-defined architecture spaces: a lark grammar file is the language of architecture strings.

``GrammarSpace.from_file("grammars/einspace.lark", input_shape=(1, 36, 36))`` reads a grammar
(format: ``grammars/README.md``), samples designs top-down with the file's weights so that every
draw builds (shape-aware, within depth, node, parameter and MAC limits), and turns designs into
canonical strings, derivation trees, IR stages, torch and ONNX. Designs are ``Derivation`` trees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import lark
import numpy as np

from nasmtl.arch.compose import compose, shared_layout
from nasmtl.arch.ir import Arch, ArchBuilder
from nasmtl.arch.registry import Shape
from nasmtl.spaces.base import Prior, SpaceError
from nasmtl.spaces.grammar_analysis import Analysis
from nasmtl.spaces.grammar_model import GrammarFile, Hole, Term
from nasmtl.spaces.grammar_reader import load_grammar
from nasmtl.spaces.grammar_walk import DeadEnd, Derivation, Frame, Limits, Span, Walker

MAX_ATTEMPTS = 200
OP_TRIES = 20


@dataclass
class SampleStats:
    """Counts over all draws of a space: designs returned, attempts thrown away, local retries."""

    designs: int = 0
    thrown_away: int = 0
    retries: int = 0

    @property
    def thrown_fraction(self) -> float:
        """Thrown-away attempts over all attempts."""
        total = self.designs + self.thrown_away
        return self.thrown_away / total if total else 0.0


@dataclass(frozen=True)
class DesignInfo:
    """Costs and size of one design on the space's input shape."""

    params: int
    macs: int
    nodes: int
    depth: int
    out_shape: Shape


@dataclass
class GrammarSpace:
    """A search space of architecture strings defined by a grammar file (an ``ArchitectureSpace``)."""

    grammar: GrammarFile
    input_shape: Shape
    limits: Limits
    weights: dict[str, list[float]] = field(default_factory=dict)
    stats: SampleStats = field(default_factory=SampleStats)
    _analysis: Analysis | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"grammar:{Path(self.grammar.path).stem}"

    @classmethod
    def from_file(cls, path: str | Path, input_shape: Shape | None = None, *, max_depth: int | None = None,
                  max_nodes: int | None = None, max_params: int | None = None,
                  max_macs: int | None = None, max_width: int | None = None) -> "GrammarSpace":
        """Load a grammar; limits given here override those written in the file."""
        g = load_grammar(path)
        return cls.from_grammar(g, input_shape, max_depth=max_depth, max_nodes=max_nodes,
                                max_params=max_params, max_macs=max_macs, max_width=max_width)

    @classmethod
    def from_grammar(cls, g: GrammarFile, input_shape: Shape | None = None, *, max_depth: int | None = None,
                     max_nodes: int | None = None, max_params: int | None = None,
                     max_macs: int | None = None, max_width: int | None = None) -> "GrammarSpace":
        """A space over an already loaded grammar."""
        lim = g.limits
        input_shape = input_shape or g.input_shape or (1, 36, 36)
        limits = Limits(int(max_depth if max_depth is not None else lim["max_depth"]),
                        int(max_nodes if max_nodes is not None else lim["max_nodes"]),
                        int(max_params if max_params is not None else lim["max_params"]),
                        int(max_macs if max_macs is not None else lim["max_macs"]),
                        int(max_width if max_width is not None else lim["max_width"]))
        space = cls(g, tuple(int(v) for v in input_shape), limits)
        if space.analysis.rule(g.start, space.input_shape, None, limits.max_depth) is None:
            raise SpaceError(f"{g.path}: no design of this grammar fits input shape {space.input_shape} "
                             f"within depth {limits.max_depth}")
        return space

    @property
    def analysis(self) -> Analysis:
        if self._analysis is None:
            self._analysis = Analysis(self.grammar, self.limits.max_width)
        return self._analysis

    def with_probabilities(self, overrides: Mapping[str, Mapping[str, float]]) -> "GrammarSpace":
        """A copy whose alternative weights are replaced: ``{rule: {alternative label: weight}}``."""
        weights = {k: list(v) for k, v in self.weights.items()}
        for rule, table in overrides.items():
            if rule not in self.grammar.rules:
                raise SpaceError(f"{self.grammar.path}: no rule '{rule}' to reweight")
            alts = self.grammar.rules[rule].alts
            labels = [a.label for a in alts]
            w = weights.get(rule) or [a.weight for a in alts]
            for label, v in table.items():
                if label not in labels:
                    raise SpaceError(f"{self.grammar.path}: rule '{rule}' has no alternative '{label}' "
                                     f"(it has: {', '.join(labels)})")
                if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise SpaceError(f"weight {v!r} for {rule}/{label} must be a finite number >= 0")
                w[labels.index(label)] = float(v)
            if sum(w) <= 0:
                raise SpaceError(f"all weights of rule '{rule}' would be zero")
            weights[rule] = w
        return replace(self, weights=weights, stats=SampleStats(), _analysis=self._analysis)

    # ---- sampling ---------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> Derivation:
        """Draw a design that builds and fits the limits; counts thrown-away attempts in ``stats``."""
        for _ in range(MAX_ATTEMPTS):
            w = Walker(self.grammar, self.analysis, self.limits, rng=rng, prior=prior, weights=self.weights)
            try:
                der, _, _ = w.root(self.input_shape)
            except DeadEnd:
                self.stats.thrown_away += 1
                self.stats.retries += w.retries
                continue
            self.stats.designs += 1
            self.stats.retries += w.retries
            return der
        raise SpaceError(f"{self.grammar.path}: no valid design in {MAX_ATTEMPTS} attempts; "
                         f"loosen the limits {self.limits}")

    # ---- strings and trees ------------------------------------------------------------------

    def encode(self, x: Derivation) -> str:
        """The canonical string of a design: the grammar's literals with the children's strings."""
        parts: list[str] = []
        self._text(x, parts)
        return "".join(parts)

    def _text(self, x: Derivation, parts: list[str]) -> None:
        alt = self.grammar.rules[x.rule].alts[x.alt]
        k = 0
        for kind, text in alt.items:
            if kind == "lit":
                parts.append(text)
            else:
                self._text(x.children[k], parts)
                k += 1

    def parse(self, s: str) -> Derivation:
        """The derivation tree of an architecture string (lark), without checking shapes."""
        try:
            tree = self.grammar.parse(s)
        except lark.exceptions.UnexpectedInput as e:
            col = getattr(e, "column", "?")
            raise SpaceError(f"not a design of {self.grammar.path}: unexpected input at line "
                             f"{getattr(e, 'line', '?')} column {col}: {s[:60]!r}") from None
        return self._from_tree(tree)

    def _from_tree(self, t: lark.Tree) -> Derivation:
        rule = self.grammar.rules[str(t.data)]
        for i, alt in enumerate(rule.alts):
            if len(alt.items) != len(t.children):
                continue
            ok = True
            for (kind, text), c in zip(alt.items, t.children):
                if kind == "lit":
                    ok = isinstance(c, lark.Token) and str(c) == text
                else:
                    ok = isinstance(c, lark.Tree) and str(c.data) == text
                if not ok:
                    break
            if ok:
                kids = tuple(self._from_tree(c) for c in t.children if isinstance(c, lark.Tree))
                return Derivation(rule.name, i, kids)
        raise SpaceError(f"parse tree of rule '{rule.name}' matches none of its alternatives")

    def decode(self, s: str) -> Derivation:
        """Parse a string and check that it builds on the input shape (limits are not enforced)."""
        x = self.parse(s)
        self.info(x)
        return x

    def _replay(self, x: Derivation, record: bool = False, spans: bool = False,
                input_shape: Shape | None = None) -> Walker:
        big = Limits(self.limits.max_depth, 10 ** 9)
        w = Walker(self.grammar, self.analysis, big, record=record, spans=spans)
        try:
            w.root(tuple(input_shape or self.input_shape), x)
        except SpaceError as e:
            raise SpaceError(f"design does not build on input {tuple(input_shape or self.input_shape)}: {e}") from None
        return w

    def info(self, x: Derivation, input_shape: Shape | None = None) -> DesignInfo:
        """Params, MACs, op nodes, IR depth and output shape of a design."""
        w = self._replay(x, record=True, input_shape=input_shape)
        depth = [0] * len(w.program)
        for i, (_, ins, _, _) in enumerate(w.program):
            depth[i] = 1 + max((depth[j] for j in ins if j >= 0), default=0)
        return DesignInfo(w.params, w.macs, w.nodes, max(depth, default=0), w.program[-1][3])

    def fits_limits(self, x: Derivation) -> bool:
        """True when the design keeps the space's node, parameter and MAC limits and its depth."""
        w = self._replay(x, record=True, spans=True)
        lim = self.limits
        depth_used = lim.max_depth - min((s.depth_left for s in w.spans.values()), default=lim.max_depth) + 1
        width = max((o[3][0 if len(o[3]) == 3 else -1] for o in w.program), default=0)
        return (w.nodes <= lim.max_nodes and depth_used <= lim.max_depth
                and (not lim.max_width or width <= lim.max_width)
                and (not lim.max_params or w.params <= lim.max_params)
                and (not lim.max_macs or w.macs <= lim.max_macs))

    # ---- architectures ----------------------------------------------------------------------

    def stages(self, x: Derivation, input_shape: Shape | None = None) -> list[Arch]:
        """The design cut at the start rule's top-level ``seq`` into chained single-output stages."""
        shape = tuple(input_shape or self.input_shape)
        node, path = x, "0"
        alt = self.grammar.rules[node.rule].alts[node.alt]
        while isinstance(alt.form, Hole):
            path = f"{path}.{alt.form.index}"
            node = node.children[alt.form.index]
            alt = self.grammar.rules[node.rule].alts[node.alt]
        forms = list(alt.form.args) if isinstance(alt.form, Term) and alt.form.head == "seq" else [alt.form]
        depth_left = 10 ** 6
        out: list[Arch] = []
        for f in forms:
            w = Walker(self.grammar, self.analysis, Limits(10 ** 6, 10 ** 9), record=True)
            fr = Frame(alt, node)
            try:
                w.form(f, fr, -1, shape, None, depth_left, path)
            except SpaceError as e:
                raise SpaceError(f"design does not build on input {shape}: {e}") from None
            arch = _program_arch(shape, w.program)
            out.append(arch)
            shape = arch.shape(arch.outputs["out"])
        return out

    def to_arch(self, x: Derivation, input_shape: Shape | None = None,
                heads: Mapping[str, int] | None = None) -> Arch:
        """The whole design with one head per task (all stages shared)."""
        heads = dict(heads or {"out": 10})
        st = self.stages(x, input_shape)
        return compose(st, shared_layout(list(heads), len(st)), heads)

    # ---- search operators -------------------------------------------------------------------

    def spans(self, x: Derivation) -> dict[str, Span]:
        """Each module-rule node of a design by path, with its input and output shapes and costs."""
        return self._replay(x, spans=True).spans

    def mutate(self, x: Derivation, rng: np.random.Generator) -> Derivation:
        """Resample one random subtree under the same rule with the same input and output shape."""
        w = self._replay(x, spans=True)
        paths = sorted(w.spans)
        for _ in range(OP_TRIES):
            path = paths[int(rng.integers(len(paths)))]
            sp = w.spans[path]
            depth_left = max(sp.depth_left, 1)
            lim = Limits(depth_left, self.limits.max_nodes - (w.nodes - sp.nodes),
                         self.limits.max_params and self.limits.max_params - (w.params - sp.params),
                         self.limits.max_macs and self.limits.max_macs - (w.macs - sp.macs),
                         self.limits.max_width)
            if lim.max_nodes < 1 or lim.max_params < 0 or lim.max_macs < 0:
                continue
            sub = Walker(self.grammar, self.analysis, lim, rng=rng, weights=self.weights)
            try:
                new, _, _ = sub.rule(sp.rule, -1, sp.in_shape, sp.out_shape, depth_left, path, None)
            except DeadEnd:
                continue
            child = _replace_at(x, path, new)
            if child != x:
                return child
        return x

    def crossover(self, a: Derivation, b: Derivation, rng: np.random.Generator) -> Derivation:
        """Put a subtree of ``b`` into ``a`` where the rule, input and output shapes agree."""
        sa, sb = self.spans(a), self.spans(b)
        by_key: dict[tuple, list[str]] = {}
        for p, s in sb.items():
            by_key.setdefault((s.rule, s.in_shape, s.out_shape), []).append(p)
        pairs = [(pa, pb) for pa, s in sa.items() for pb in by_key.get((s.rule, s.in_shape, s.out_shape), [])]
        order = rng.permutation(len(pairs)) if pairs else []
        for k in list(order)[:OP_TRIES]:
            pa, pb = pairs[int(k)]
            child = _replace_at(a, pa, _get_at(b, pb))
            if child != a and self.fits_limits(child):
                return child
        return a

    def choices(self, x: Derivation) -> dict[str, str]:
        """The decisions of a design: ``{"<rule>@<path>": alternative label}`` (rules with a choice)."""
        return self._replay(x).choices

    def decision_options(self, x: Derivation) -> dict[str, tuple[str, ...]]:
        """Each decision of ``x`` with its rule's alternative labels (``design_options``)."""
        rules = self.grammar.rules
        return {k: tuple(dict.fromkeys(a.label for a in rules[k.split("@", 1)[0]].alts)) for k in self.choices(x)}

    def size(self) -> float:
        """Infinite when any rule recurses (the usual case); else the number of derivations."""
        if any(a.recursive for r in self.grammar.rules.values() for a in r.alts):
            return math.inf
        memo: dict[str, float] = {}

        def count(name: str) -> float:
            if name not in memo:
                memo[name] = sum(math.prod(count(h) for h in a.holes) for a in self.grammar.rules[name].alts)
            return memo[name]

        return count(self.grammar.start)


def _program_arch(shape: Shape, program: list) -> Arch:
    b = ArchBuilder(shape)
    ids: list[str] = []
    for op, ins, attrs, _ in program:
        ids.append(b.add(op, *(b.input if j < 0 else ids[j] for j in ins), **attrs))
    b.output("out", ids[-1] if ids else b.add("identity", b.input))
    return b.build()


def _steps(path: str) -> list[int]:
    return [int(p) for p in path.split(".")[1:]]


def _get_at(x: Derivation, path: str) -> Derivation:
    for h in _steps(path):
        x = x.children[h]
    return x


def _replace_at(x: Derivation, path: str, new: Derivation) -> Derivation:
    steps = _steps(path)
    if not steps:
        return new
    h = steps[0]
    rest = "0" + "".join(f".{s}" for s in steps[1:])
    kids = list(x.children)
    kids[h] = _replace_at(kids[h], rest, new)
    return Derivation(x.rule, x.alt, tuple(kids))


def load_space(path: str | Path, input_shape: Shape | None = None, **limits: int | None) -> GrammarSpace:
    """Shorthand for ``GrammarSpace.from_file``."""
    return GrammarSpace.from_file(path, input_shape, **limits)


__all__ = ["DesignInfo", "Derivation", "GrammarSpace", "SampleStats", "Span", "load_space"]
