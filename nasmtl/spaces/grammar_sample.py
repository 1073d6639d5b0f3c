"""Shape-aware top-down sampling and replay of grammar derivations.

One walker does both: sampling (choosing alternatives with the file's weights, filtered so that
every choice can still complete) and replay (following a given derivation to compute shapes,
costs and the op program). Feasibility comes from a memoised static analysis,
``Analysis.rule(name, in_shape, target, depth)``: the fewest op nodes any completion needs, or
None. A target is a shape pattern (``None`` entries are free); it arises where merges need equal
shapes and where post-routing must invert pre-routing, so branches and routes are sampled to
fit rather than drawn and thrown away.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from nasmtl.arch.registry import Shape, ShapeError, get_op
from nasmtl.spaces.base import Prior, SpaceError
from nasmtl.spaces.grammar_format import COMBINATORS, Alternative, Form, GrammarFile, Hole, Term, value_of

Pattern = tuple  # tuple[int | None, ...] or None for "anything"

SAME_SHAPE_OPS = frozenset({"identity", "dropout", "relu", "gelu", "sigmoid", "tanh", "softmax",
                            "batchnorm", "layernorm", "posenc"})
SEQ_RETRIES = 8
HORIZON = 1
"""Combinator levels the static analysis looks ahead; beyond it, untargeted modules are assumed to
complete (identity-like ops exist) and targeted ones are not relied on."""
NESTED = 100
"""Ordering weight of a combinator among alternatives tried for feasibility (after ops and references)."""
LOCAL_RETRIES = 60
"""Dead ends a draw may undo locally (trying a hole's next alternative) before it is thrown away."""


class Derivation(NamedTuple):
    """A derivation tree: the alternative taken at a rule and one child per hole of it.

    A named tuple: immutable, cheap to make (a draw makes about 65), and a finished tree holds
    only strings, ints and tuples, so the garbage collector stops tracking it.
    """

    rule: str
    alt: int
    children: tuple["Derivation", ...] = ()


@dataclass(frozen=True)
class Span:
    """What one module-rule node of a derivation takes in, gives out and costs."""

    rule: str
    in_shape: Shape
    out_shape: Shape
    depth_left: int
    nodes: int
    params: int
    macs: int


class DeadEnd(Exception):
    """A draw that cannot complete within its limits (it is thrown away and counted)."""


@dataclass
class Limits:
    """Depth, node, parameter and MAC limits of a draw (0: no limit for params and MACs)."""

    max_depth: int
    max_nodes: int
    max_params: int = 0
    max_macs: int = 0
    max_width: int = 0
    """Largest feature (channel) size of any tensor: im2col chains multiply it."""


Cost = tuple  # (op nodes, params, MACs): lower bounds of what a completion needs


def _add(a: Cost, b: Cost) -> Cost:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _min(a: Cost | None, b: Cost | None) -> Cost | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]))


ZERO: Cost = (0, 0, 0)
NO_BOUND = -1
"""A memoised bound of ``None`` (no completion)."""
_WIDE = (1 << 48) - 1


def _pack(c: Cost | None) -> int:
    """A bound as one non-negative int below 2**159 (each part capped, which keeps it a lower bound)."""
    if c is None:
        return NO_BOUND
    return min(c[0], 0xFFFF) | min(c[1], _WIDE) << 16 | min(c[2], _WIDE << 47) << 64


def _unpack(v: int) -> Cost | None:
    return None if v < 0 else (v & 0xFFFF, (v >> 16) & _WIDE, v >> 64)


TABLE_BITS = 160
"""Bits per alternative in an op table: a packed bound plus one (``_pack`` stays below 2**159)."""


def table_entry(table: int, k: int) -> Cost | None:
    """Alternative ``k``'s bound in an ``Analysis.op_table``."""
    return _unpack(((table >> (TABLE_BITS * k)) & ((1 << TABLE_BITS) - 1)) - 1)


def _match(shape: Shape, pattern: Pattern | None) -> bool:
    if pattern is None or shape == pattern:
        return True
    return len(shape) == len(pattern) and all(p is None or p == s for s, p in zip(shape, pattern))


def _concrete(pattern: Pattern | None) -> bool:
    return pattern is not None and all(p is not None for p in pattern)


def _depth_key(d: int, h: int, p: Pattern | None) -> int:
    """The depth as far as an analysis looking ``h`` levels ahead can tell it apart (memo keys).

    A bound looking ``h`` combinator levels ahead sees depth only through the checks ``d >= 1``
    (op terms) and ``d >= 2`` (an untargeted combinator at the horizon), each level spending one,
    so every depth from ``h + 2`` up gives the same answer; at the horizon a targeted bound
    never relies on a combinator, so there ``d >= 1`` is all that matters.
    """
    return min(d, 1 if h <= 0 and p is not None else h + 2)


def _axis(axis: Any, rank: int) -> int:
    if axis is None:
        return 0 if rank == 3 else rank - 1
    return int(axis) % rank


class _Combo(NamedTuple):
    """One assignment of an op term's parameter holes: ``{hole index: value alternative}``."""

    picks: tuple[tuple[int, int], ...]
    attrs: dict[str, Any]


Fit = tuple
"""A combo that fits given input shapes: ``(picks, attribute items, out shape, params, MACs)``,
indexed by the constants below. Only plain tuples of numbers and strings, which the garbage
collector stops tracking (it never untracks tuples holding a dict, a NamedTuple or a dataclass):
a memo of hundreds of thousands of fits then adds nothing to full-collection pauses in later draws."""
PICKS, ATTRS, OUT, PARAMS, MACS = range(5)


def _fit(combo: _Combo, out: Shape, params: int, macs: int) -> Fit:
    return (combo.picks, tuple(combo.attrs.items()), out, params, macs)


class Analysis:
    """Memoised feasibility: fewest op nodes to complete a rule from a shape to a pattern."""

    def __init__(self, g: GrammarFile, max_width: int = 0) -> None:
        self.g = g
        self.max_width = max_width
        self._rule: dict[int, int] = {}
        self._first: dict[tuple, Cost | None] = {}
        self._feasible: dict[tuple, bool] = {}
        self._plan: dict[int, int] = {}
        self._cheap_first: dict[str, list[Alternative]] = {}
        self._cands: dict[tuple[str, int], tuple[tuple[int, float], ...]] = {}
        self._labels: dict[str, list[str]] = {}
        self._weights: dict[str, list[float]] = {}
        self._rule_ids = {name: i for i, name in enumerate(g.rules)}
        self._shape_ids: dict[Pattern | None, int] = {None: 0}
        self._combos: dict[int, list[_Combo]] = {}
        self._fits: dict[tuple, tuple[Fit, ...]] = {}
        self._ops: dict[int, int] = {}
        self._op_tables: dict[int, int] = {}
        self._applied: dict[tuple, tuple[tuple, Shape, int, int]] = {}
        self._options: dict[tuple[int, int], tuple[tuple[int | None, Term, Alternative], ...]] = {}
        # Rules of op terms only (bounded by ``ops``) and of combinators only (their node count at the horizon).
        self.op_rules: set[str] = set()
        self._flat: dict[str, Cost] = {}
        for name, rule in g.rules.items():
            forms = [a.form for a in rule.alts if a.weight > 0]
            if forms and all(isinstance(f, Term) and f.head not in COMBINATORS for f in forms):
                self.op_rules.add(name)
            elif forms and all(isinstance(f, Term) and f.head in COMBINATORS for f in forms):
                self._flat[name] = (min(len(f.args) - (2 if f.head == "branch" else 0) for f in forms), 0, 0)
        # Rules whose alternatives all refer to op-only or combinator-only rules: at the horizon their
        # bound is the op rules' (and, untargeted, the combinators' flat count), with no memo entry.
        self._refs_at_horizon: dict[str, tuple[list[str], Cost | None]] = {}
        for name, rule in g.rules.items():
            alts = [a for a in rule.alts if a.weight > 0]
            refs = [a.holes[a.form.index] for a in alts if isinstance(a.form, Hole)]
            if (alts and len(refs) == len(alts) and name not in self.op_rules
                    and all(r in self.op_rules or r in self._flat for r in refs)):
                flat = None
                for r in refs:
                    if r in self._flat:
                        flat = _min(flat, self._flat[r])
                self._refs_at_horizon[name] = ([r for r in refs if r in self.op_rules], flat)

    # ---- op terms ---------------------------------------------------------------------------

    def combos(self, term: Term, owner: Alternative) -> list[_Combo]:
        """Every assignment of the term's parameter holes, with the attributes it gives."""
        key = id(term)
        if key in self._combos:
            return self._combos[key]
        fixed: dict[str, Any] = {}
        holes: list[tuple[str, int]] = []
        for k, v in term.kwargs:
            if isinstance(v, Hole):
                holes.append((k, v.index))
            else:
                fixed[k] = v.value  # type: ignore[union-attr]
        opts = [range(len(self.g.rules[owner.holes[h]].alts)) for _, h in holes]
        out = []
        for pick in itertools.product(*opts):
            attrs = dict(fixed)
            for (k, h), i in zip(holes, pick):
                attrs[k] = value_of(self.g.rules[owner.holes[h]].alts[i].form)
            out.append(_Combo(tuple((h, i) for (_, h), i in zip(holes, pick)), attrs))
        self._combos[key] = out
        return out

    def fits(self, term: Term, owner: Alternative, ins: tuple[Shape, ...], pattern: Pattern | None,
             extra: tuple = ()) -> tuple[Fit, ...]:
        """The combos of an op term that accept ``ins`` and give a shape matching ``pattern``.

        Shape rules run once per term and inputs; each pattern keeps a filtered view of the same
        fits, so the memo grows by tuples of fits already made, not by new ones per pattern.
        """
        key = (id(term), ins, pattern, extra)
        hit = self._fits.get(key)
        if hit is not None:
            return hit
        every = self._fits.get((id(term), ins, None, extra))
        if every is None:
            every = self._fits[(id(term), ins, None, extra)] = self._all_fits(term, owner, ins, extra)
        if pattern is not None:
            every = tuple(f for f in every if _match(f[OUT], pattern))
            self._fits[key] = every
        return every

    def _all_fits(self, term: Term, owner: Alternative, ins: tuple[Shape, ...], extra: tuple) -> tuple[Fit, ...]:
        """Every combo of an op term that accepts ``ins`` (within the width limit), with output and costs."""
        spec = get_op(term.head)
        res = []
        for c in self.combos(term, owner):
            attrs = dict(c.attrs)
            attrs.update(extra)
            try:
                full = spec.resolve(attrs)
                spec.check_arity(len(ins))
                out = tuple(int(v) for v in spec.shape(list(ins), full))
            except (ShapeError, ValueError, KeyError, TypeError):
                continue
            if self.max_width and out[0 if len(out) == 3 else -1] > self.max_width:
                continue
            res.append((c.picks, tuple(full.items()), out, int(spec.params(list(ins), out, full)),
                        int(spec.macs(list(ins), out, full))))
        return tuple(res)

    def apply(self, op: str, attrs: dict[str, Any], ins: list[Shape]) -> tuple[tuple, Shape, int, int]:
        """An op's resolved attribute items, output shape, params and MACs on ``ins`` (memoised; raises the op's errors).

        Items rather than a dict keep the memo's entries plain tuples the garbage collector drops.
        """
        try:
            key = (op, tuple(attrs.items()), tuple(ins))
            hit = self._applied.get(key)
        except TypeError:
            key, hit = None, None
        if hit is not None:
            return hit
        spec = get_op(op)
        full = spec.resolve(attrs)
        spec.check_arity(len(ins))
        out = tuple(int(v) for v in spec.shape(ins, full))
        hit = (tuple(full.items()), out, int(spec.params(ins, out, full)), int(spec.macs(ins, out, full)))
        if key is not None:
            self._applied[key] = hit
        return hit

    def options(self, slot: Form, owner: Alternative) -> tuple[tuple[int | None, Term, Alternative], ...]:
        """The op terms a slot may hold: itself when inline, or each alternative of its rule (cached)."""
        key = (id(slot), id(owner))
        out = self._options.get(key)
        if out is None:
            if isinstance(slot, Term):
                out = ((None, slot, owner),)
            else:
                rule = self.g.rules[owner.holes[slot.index]]  # type: ignore[union-attr]
                out = tuple((i, a.form, a) for i, a in enumerate(rule.alts) if a.weight > 0)  # type: ignore[misc]
            self._options[key] = out
        return out

    def labels(self, name: str) -> list[str]:
        """The labels of a rule's alternatives (what ``choices`` records)."""
        out = self._labels.get(name)
        if out is None:
            out = self._labels[name] = [a.label for a in self.g.rules[name].alts]
        return out

    def weights(self, name: str) -> list[float]:
        """The file's weights of a rule's alternatives."""
        out = self._weights.get(name)
        if out is None:
            out = self._weights[name] = [a.weight for a in self.g.rules[name].alts]
        return out

    # ---- modules ----------------------------------------------------------------------------

    def _shape_id(self, s: Pattern | None) -> int:
        i = self._shape_ids.get(s)
        if i is None:
            i = self._shape_ids[s] = len(self._shape_ids)
        return i

    def _key(self, name: str, alt: int, s: Shape, p: Pattern | None, dk: int, h: int) -> int:
        """One int naming a bound (rule or alternative, shape, pattern, depth key, horizon).

        Ints, unlike tuples, never make the memo a container the garbage collector must walk:
        a memo of a million bounds then costs full collections nothing.
        """
        ids = self._shape_ids
        si, pi = ids.get(s), ids.get(p)
        if si is None:
            si = self._shape_id(s)
        if pi is None:
            pi = self._shape_id(p)
        return self._rule_ids[name] | (alt + 1) << 12 | si << 24 | pi << 52 | dk << 80 | h << 84

    def ops(self, name: str, s: Shape, p: Pattern | None) -> Cost | None:
        """The bound of a rule whose alternatives are all op terms: one op, the least params and MACs (memoised).

        It depends on neither depth (given one level) nor horizon, so one entry serves them all.
        """
        key = self._key(name, -1, s, p, 0, 0)
        hit = self._ops.get(key)
        if hit is None:
            best = None
            table = self.op_table(name, s, p, key)
            for k, alt in enumerate(self.g.rules[name].alts):
                if alt.weight > 0:
                    best = _min(best, table_entry(table, k))
            self._ops[key] = hit = _pack(best)
        return _unpack(hit)

    def op_table(self, name: str, s: Shape, p: Pattern | None, key: int | None = None) -> int:
        """For an op-only rule: each alternative's bound (one op, least params and MACs) in one int (memoised).

        A walker choosing among the ops of such a rule reads every alternative's bound with one lookup
        (``table_entry``); the fits are filtered from each op's untargeted ones, so targets add no
        entries to ``fits``'s memo. One int rather than a tuple: the garbage collector never walks it.
        """
        if key is None:
            key = self._key(name, -1, s, p, 0, 0)
        hit = self._op_tables.get(key)
        if hit is None:
            hit = 0
            for k, alt in enumerate(self.g.rules[name].alts):
                best = None
                for fit in self.fits(alt.form, alt, (s,), None):  # type: ignore[arg-type]
                    if p is None or _match(fit[OUT], p):
                        best = _min(best, (1, fit[PARAMS], fit[MACS]))
                hit |= (_pack(best) + 1) << (TABLE_BITS * k)
            self._op_tables[key] = hit
        return hit

    def _shortcut(self, name: str, s: Shape, p: Pattern | None, d: int, h: int) -> Cost | None | bool:
        """The bound without the memo where it is plain: op-only rules, and combinator-only ones at the horizon.

        False when there is none (the caller analyses the alternatives).
        """
        if name in self.op_rules:
            return self.ops(name, s, p) if d >= 1 else None
        if h <= 0:
            flat = self._flat.get(name)
            if flat is not None:
                return flat if p is None and d >= 2 else None
            refs = self._refs_at_horizon.get(name)
            if refs is not None:
                if d < 1:
                    return None
                best = refs[1] if p is None and d >= 2 else None
                for r in refs[0]:
                    best = _min(best, self.ops(r, s, p))
                return best
        return False

    def rule(self, name: str, s: Shape, p: Pattern | None, d: int, h: int = HORIZON) -> Cost | None:
        """Lower bound on (nodes, params, MACs) of a derivation of ``name`` from ``s`` to ``p``."""
        quick = self._shortcut(name, s, p, d, h)
        if quick is not False:
            return quick  # type: ignore[return-value]
        key = self._key(name, -1, s, p, _depth_key(d, h, p), h)
        memo = self._rule
        hit = memo.get(key)
        if hit is not None:
            return _unpack(hit)
        memo[key] = NO_BOUND
        best: Cost | None = None
        for alt in self.g.rules[name].alts:
            if alt.weight > 0:
                best = _min(best, self.form(alt.form, alt, s, p, d, h))
        memo[key] = _pack(best)
        return best

    def rule_key(self, name: str, s: Shape, p: Pattern | None, d: int) -> int:
        """The memo key of a rule's bound at the default horizon; ``alt`` and ``alt_plan`` add the alternative."""
        return self._key(name, -1, s, p, _depth_key(d, HORIZON, p), HORIZON)

    def alt(self, name: str, i: int, s: Shape, p: Pattern | None, d: int, key: int | None = None) -> Cost | None:
        """The bound for derivations starting with alternative ``i`` of ``name`` (``key``: ``rule_key``'s)."""
        if key is None:
            key = self.rule_key(name, s, p, d)
        key |= (i + 1) << 12
        hit = self._rule.get(key)
        if hit is None:
            alt = self.g.rules[name].alts[i]
            self._rule[key] = hit = _pack(self.form(alt.form, alt, s, p, d))
        return _unpack(hit)

    def candidates(self, name: str, steps: int, decay: float) -> tuple[tuple[int, float], ...]:
        """``(alternative, weight)`` with the file's weights, recursive ones times ``decay ** steps`` (cached)."""
        key = (name, steps)
        out = self._cands.get(key)
        if out is None:
            f = decay ** steps
            out = self._cands[key] = tuple((k, a.weight * (f if a.recursive else 1.0))
                                           for k, a in enumerate(self.g.rules[name].alts) if a.weight > 0)
        return out

    def reaches(self, f: Form, alt: Alternative, s: Shape, p: Pattern | None, d: int, h: int = HORIZON) -> bool:
        """``form(f, ...) is not None``, without the cost bound (see ``plan``)."""
        return self.plan(f, alt, s, p, d, h) is not None

    def plan(self, f: Form, alt: Alternative, s: Shape, p: Pattern | None, d: int, h: int = HORIZON) -> Cost | None:
        """The cost of the first way found to complete ``f``, or None exactly when ``form`` is None (memoised).

        Feasibility checks need no least cost, and most are settled by one op (an identity, a
        linear layer): a rule's alternatives are tried ops first, rule references next,
        combinators last, and a combinator stops at its first fitting plan. The cost returned is
        that of one way, so never below ``form``'s bound: a budget that affords it affords the bound.
        """
        if isinstance(f, Hole):
            name = alt.holes[f.index]
            quick = self._shortcut(name, s, p, d, h)
            if quick is not False:
                return quick  # type: ignore[return-value]
            key = self._key(name, -1, s, p, _depth_key(d, h, p), h)
            hit = self._plan.get(key)
            if hit is None:
                self._plan[key] = NO_BOUND
                order = self._cheap_first.get(name)
                if order is None:
                    alts = [a for a in self.g.rules[name].alts if a.weight > 0]
                    order = self._cheap_first[name] = sorted(alts, key=self._steps_to_op)
                c = None
                for a in order:
                    c = self.plan(a.form, a, s, p, d, h)
                    if c is not None:
                        break
                self._plan[key] = hit = _pack(c)
            return _unpack(hit)
        assert isinstance(f, Term)
        if d < 1:
            return None
        if f.head not in ("seq", "branch", "route"):
            return self.form(f, alt, s, p, d, h)
        if h <= 0:
            return self.form(f, alt, s, p, d, h)
        h -= 1
        if f.head == "seq":
            for j in range(len(f.args) if p is not None else 1):
                c = self.seq_at(f, alt, s, p, d, j, h, self.plan)
                if c is not None:
                    return c
            return None
        if f.head == "branch":
            k = len(f.args) - 2
            for _, _, _, shapes in self.split_options(f, alt, s, k):
                for _, term, owner in self.options(f.args[-1], alt):
                    for c in self.combos(term, owner)[:1]:
                        n = self.branch_with(f, alt, shapes, term, c.attrs, p, d, h, self.plan)
                        if n is not None:
                            return _add(n, (1 + (k if shapes[0] != s else 0), 0, 0))
            return None
        for plan in self.route_plans(f, alt, s, p):
            n = self.plan(f.args[1], alt, plan[3][OUT], plan[8], d - 1, h)
            if n is not None:
                return _add(n, (2, plan[3][PARAMS], plan[3][MACS]))
        return None

    def alt_plan(self, name: str, i: int, s: Shape, p: Pattern | None, d: int, key: int | None = None) -> Cost | None:
        """``plan`` for derivations starting with alternative ``i`` of ``name`` (memoised; ``key``: ``rule_key``'s)."""
        if key is None:
            key = self.rule_key(name, s, p, d)
        key |= (i + 1) << 12
        hit = self._plan.get(key)
        if hit is None:
            alt = self.g.rules[name].alts[i]
            self._plan[key] = hit = _pack(self.plan(alt.form, alt, s, p, d))
        return _unpack(hit)

    def _steps_to_op(self, a: Alternative, seen: frozenset = frozenset()) -> int:
        """Rule references between an alternative and an op term (combinators count as far away)."""
        f = a.form
        if isinstance(f, Term):
            return NESTED if f.head in ("seq", "branch", "route") else 0
        name = a.holes[f.index]  # type: ignore[union-attr]
        if name in seen:
            return NESTED
        return 1 + min((self._steps_to_op(b, seen | {name}) for b in self.g.rules[name].alts if b.weight > 0),
                       default=NESTED)

    def form(self, f: Form, alt: Alternative, s: Shape, p: Pattern | None, d: int,
             h: int = HORIZON) -> Cost | None:
        """The bound for a module form (hole, combinator or op term), looking ``h`` levels ahead."""
        if isinstance(f, Hole):
            return self.rule(alt.holes[f.index], s, p, d, h)
        assert isinstance(f, Term)
        if d < 1:
            return None
        if f.head in ("seq", "branch", "route"):
            if h <= 0:
                return (len(f.args) - (2 if f.head == "branch" else 0), 0, 0) if p is None and d >= 2 else None
            if f.head == "seq":
                return self._seq(f, alt, s, p, d, h - 1)
            if f.head == "branch":
                return self._branch(f, alt, s, p, d, h - 1)
            return self._route(f, alt, s, p, d, h - 1)
        best = None
        for fit in self.fits(f, alt, (s,), p):
            best = _min(best, (1, fit[PARAMS], fit[MACS]))
        return best

    def _seq(self, f: Term, alt: Alternative, s: Shape, p: Pattern | None, d: int, h: int) -> Cost | None:
        if p is None:
            return self.seq_at(f, alt, s, None, d, 0, h)
        best = None
        for j in range(len(f.args)):
            best = _min(best, self.seq_at(f, alt, s, p, d, j, h))
        return best

    def seq_at(self, f: Term, alt: Alternative, s: Shape, p: Pattern | None, d: int, j: int,
               h: int = HORIZON - 1, each: Callable[..., Cost | None] | None = None) -> Cost | None:
        """Nodes of a targeted seq whose ``j``-th module does the change (the others keep shape).

        Untargeted (``p`` None), every module is bounded from ``s`` to anything. ``each`` bounds one
        module: ``form`` (the default) or ``plan``.
        """
        each = each or self.form
        total = ZERO
        after = p if _concrete(p) else s
        for i, a in enumerate(f.args):
            if p is None:
                n = each(a, alt, s, None, d - 1, h)
            else:
                n = each(a, alt, s if i <= j else after, s if i < j else (p if i == j else after), d - 1, h)
            if n is None:
                return None
            total = _add(total, n)
        return total

    def split_options(self, f: Term, alt: Alternative, s: Shape, k: int) -> list[tuple[int | None, Term, Alternative, list[Shape]]]:
        """Split terms that fit ``s`` into ``k`` branches, with the branch input shapes."""
        out = []
        for i, term, owner in self.options(f.args[0], alt):
            if term.head == "clone":
                out.append((i, term, owner, [s] * k))
                continue
            for c in self.combos(term, owner):
                shapes = self.group_shapes(s, k, c.attrs.get("axis"))
                if shapes is not None:
                    out.append((i, term, owner, shapes))
                    break
        return out

    @staticmethod
    def group_shapes(s: Shape, k: int, axis: Any) -> list[Shape] | None:
        """Branch inputs of a grouping split, or None when ``k`` does not divide the axis."""
        try:
            ax = _axis(axis, len(s))
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        if s[ax] % k:
            return None
        part = list(s)
        part[ax] //= k
        return [tuple(part)] * k

    def one_op_outputs(self, f: Form, alt: Alternative, s: Shape) -> tuple[Shape, ...]:
        """``s`` and the shapes one op of this module form can give from ``s`` (merge candidates)."""
        key = ("one", id(f), s)
        hit = self._fits.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        out: list[Shape] = [s]
        todo: list[tuple[Form, Alternative]] = [(f, alt)]
        seen: set[int] = set()
        while todo:
            g, owner = todo.pop()
            if id(g) in seen:
                continue
            seen.add(id(g))
            if isinstance(g, Hole):
                for a in self.g.rules[owner.holes[g.index]].alts:
                    if a.weight > 0:
                        todo.append((a.form, a))
            elif isinstance(g, Term) and g.head not in ("seq", "branch", "route"):
                for fit in self.fits(g, owner, (s,), None):
                    if fit[OUT] not in out:
                        out.append(fit[OUT])
        self._fits[key] = hit = tuple(out)  # type: ignore[assignment]
        return hit  # type: ignore[return-value]

    @staticmethod
    def merge_pattern(head: str, attrs: Mapping[str, Any], t: Shape) -> Pattern:
        """The pattern every branch must reach for a merged shape ``t`` (concat frees its axis)."""
        if head == "concat":
            ax = _axis(attrs.get("axis"), len(t))
            return tuple(None if i == ax else v for i, v in enumerate(t))
        return t

    def merge_targets(self, term: Term, attrs: Mapping[str, Any], k: int, p: Pattern | None,
                      first: Shape | None) -> list[Pattern | None] | None:
        """Patterns for the branches of a merge (later ones from the first branch's output)."""
        head = term.head
        if head in ("add", "multiply"):
            return [p] + [first if first is not None else p] * (k - 1)
        if head == "concat":
            rank = len(first) if first is not None else (len(p) if p is not None else None)
            if rank is None:
                return [None] * k
            ax = _axis(attrs.get("axis"), rank)
            if p is not None and p[ax] is not None:
                if p[ax] % k:
                    return None
                part = tuple(p[ax] // k if i == ax else v for i, v in enumerate(p))
                return [part] * k
            base = first if first is not None else p
            free = tuple(None if i == ax else v for i, v in enumerate(base))  # type: ignore[arg-type]
            return [p if first is None else free] + [free] * (k - 1)
        if head == "matmul" and k == 2:
            x = (*p[:-1], None) if p is not None else None
            if first is None:
                return [x, None]
            last = p[-1] if p is not None else None
            y = (*first[:-2], last, first[-1]) if attrs.get("transpose_b") else (*first[:-2], first[-1], last)
            return [x, y]
        return [None] * k if p is None else None

    def _branch(self, f: Term, alt: Alternative, s: Shape, p: Pattern | None, d: int, h: int) -> Cost | None:
        k = len(f.args) - 2
        best = None
        for _, _, _, shapes in self.split_options(f, alt, s, k):
            for _, term, owner in self.options(f.args[-1], alt):
                for c in self.combos(term, owner)[:1]:
                    n = self.branch_with(f, alt, shapes, term, c.attrs, p, d, h)
                    if n is not None:
                        best = _min(best, _add(n, (1 + (k if shapes[0] != s else 0), 0, 0)))
        return best

    def first_candidates(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                         attrs: Mapping[str, Any], p: Pattern | None) -> list[Shape]:
        """Outputs the first branch may aim for (one op away) that the merge accepts as its first input."""
        base = self.merge_targets(merge, attrs, len(shapes), p, None)
        if base is None:
            return []
        return [t for t in self.one_op_outputs(f.args[1], alt, shapes[0]) if _match(t, base[0])]

    def first_target_cost(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                          attrs: Mapping[str, Any], p: Pattern | None, d: int, t: Shape) -> Cost | None:
        """Bound for all branches when the first one aims at ``t`` and the others fit the merge (None: no fit).

        Targets are checked one at a time (and memoised), so a draw pays only for those it tries.
        """
        key = ("first", id(f), id(merge), tuple(sorted(attrs.items(), key=lambda kv: kv[0])),
               tuple(shapes), p, _depth_key(d - 1, HORIZON, None), t)
        if key in self._first:
            return self._first[key]
        branches = f.args[1:-1]
        rest = self.merge_targets(merge, attrs, len(shapes), p, t)
        total = self.form(branches[0], alt, shapes[0], t, d - 1) if rest is not None else None
        for b, sh, r in zip(branches[1:], shapes[1:], (rest or [])[1:]):
            if total is None:
                break
            n = self.form(b, alt, sh, r, d - 1)
            total = None if n is None else _add(total, n)
        self._first[key] = total
        return total

    def first_target_fits(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                          attrs: Mapping[str, Any], p: Pattern | None, d: int, t: Shape) -> bool:
        """``first_target_cost(...) is not None``, without the cost."""
        return self.first_target_plan(f, alt, shapes, merge, attrs, p, d, t) is not None

    def first_target_plan(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                          attrs: Mapping[str, Any], p: Pattern | None, d: int, t: Shape) -> Cost | None:
        """The cost of one way for all branches to fit when the first aims at ``t`` (``plan`` of each; None: no fit)."""
        rest = self.merge_targets(merge, attrs, len(shapes), p, t)
        if rest is None:
            return None
        branches = f.args[1:-1]
        total = self.plan(branches[0], alt, shapes[0], t, d - 1)
        for b, sh, r in zip(branches[1:], shapes[1:], rest[1:]):
            if total is None:
                return None
            n = self.plan(b, alt, sh, r, d - 1)
            total = None if n is None else _add(total, n)
        return total

    def branch_with(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                    attrs: Mapping[str, Any], p: Pattern | None, d: int, h: int = HORIZON - 1,
                    each: Callable[..., Cost | None] | None = None) -> Cost | None:
        """Optimistic nodes of the branches for a split and merge (later branches approximated).

        ``each`` bounds one branch: ``form`` (the default) or ``plan``.
        """
        each = each or self.form
        targets = self.merge_targets(merge, attrs, len(shapes), p, None)
        if targets is None:
            return None
        total = ZERO
        for a, sh, t in zip(f.args[1:-1], shapes, targets):
            n = each(a, alt, sh, t, d - 1, h)
            if n is None:
                return None
            total = _add(total, n)
        return total

    def branch_feasible(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                        combo: _Combo, p: Pattern | None, d: int) -> bool:
        """Whether some first-branch target lets every branch fit the merge with ``combo`` (stops at the first; memoised)."""
        attrs = combo.attrs
        key = (id(f), id(merge), id(combo), tuple(shapes), p, _depth_key(d - 1, HORIZON, None))
        hit = self._feasible.get(key)
        if hit is None:
            hit = self._feasible[key] = any(self.first_target_fits(f, alt, shapes, merge, attrs, p, d, t)
                                         for t in self.first_candidates(f, alt, shapes, merge, attrs, p))
        return hit

    def post_target(self, post: Term, attrs: Mapping[str, Any], pre: Term, pre_attrs: Mapping[str, Any],
                    mid: Shape, p: Pattern | None) -> tuple[Pattern | None, dict[str, Any]] | None:
        """The pattern the routed module must reach so that ``post`` gives ``p``, and auto attributes."""
        extra: dict[str, Any] = {}
        head = post.head
        if head == "col2im":
            if "h" in attrs:
                h, w = attrs["h"], attrs["w"]
            elif pre.head == "im2col":
                k = pre_attrs["k"]
                st = k if pre_attrs.get("stride") is None else pre_attrs["stride"]
                pad = pre_attrs.get("padding", 0)
                src = pre_attrs["_in"]
                h, w = (src[1] + 2 * pad - k) // st + 1, (src[2] + 2 * pad - k) // st + 1
                extra = {"h": h, "w": w}
            else:
                return None
            if p is not None and (len(p) != 3 or p[1] not in (None, h) or p[2] not in (None, w)):
                return None
            return (h * w, p[0] if p is not None else None), extra
        if head == "permute":
            if "perm" in attrs:
                perm = tuple(attrs["perm"])
            elif pre.head == "permute":
                fwd = tuple(pre_attrs["perm"])
                perm = tuple(sorted(range(len(fwd)), key=lambda i: fwd[i]))
                extra = {"perm": perm}
            else:
                return None
            if p is None:
                return (None,) * len(perm), extra
            if len(p) != len(perm):
                return None
            inv = [None] * len(perm)
            for i, q in enumerate(perm):
                inv[q] = p[i]
            return tuple(inv), extra
        if head in SAME_SHAPE_OPS:
            return p, extra
        if head == "linear" and p is not None:
            ax = _axis(None, len(p))
            if p[ax] not in (None, attrs.get("out")):
                return None
            return tuple(None if i == ax else v for i, v in enumerate(p)), extra
        return (None, extra) if p is None else None

    def route_plans(self, f: Term, alt: Alternative, s: Shape, p: Pattern | None) -> list[tuple]:
        """Every (pre option, pre fit, post option, post combo, module target, auto attrs) that fits.

        Not memoised: the plans hold grammar objects, so a memo of them would be walked by every
        full garbage collection (tens of milliseconds after ten thousand draws).
        """
        out = []
        for pi, pre, powner in self.options(f.args[0], alt):
            for fit in self.fits(pre, powner, (s,), None):
                pre_attrs = dict(fit[ATTRS], _in=s)
                for qi, post, qowner in self.options(f.args[2], alt):
                    for c in self.combos(post, qowner):
                        tgt = self.post_target(post, c.attrs, pre, pre_attrs, fit[OUT], p)
                        if tgt is not None:
                            out.append((pi, pre, powner, fit, qi, post, qowner, c, tgt[0], tgt[1]))
        return out

    def _route(self, f: Term, alt: Alternative, s: Shape, p: Pattern | None, d: int, h: int) -> Cost | None:
        best = None
        for plan in self.route_plans(f, alt, s, p):
            fit, target = plan[3], plan[8]
            n = self.form(f.args[1], alt, fit[OUT], target, d - 1, h)
            if n is not None:
                best = _min(best, _add(n, (2, fit[PARAMS], fit[MACS])))
        return best


class _Frame:
    """The alternative being walked, the derivation node replayed (None when sampling) and the children made."""

    __slots__ = ("alt", "given", "children")

    def __init__(self, alt: Alternative, given: Derivation | None) -> None:
        self.alt, self.given = alt, given
        self.children: list[Derivation | None] = [None] * len(alt.holes)


class Walker:
    """Samples a derivation (``given`` None) or replays one, tracking shapes, costs and ops."""

    def __init__(self, g: GrammarFile, analysis: Analysis, limits: Limits, *,
                 rng: np.random.Generator | None = None, prior: Prior | None = None,
                 weights: Mapping[str, list[float]] | None = None, record: bool = False,
                 spans: bool = False) -> None:
        self.g, self.an, self.lim = g, analysis, limits
        self.rng, self.prior = rng, prior or {}
        # The walk's own stream, seeded from ``rng``: a walk makes about 70 small draws, and numpy's
        # per-call cost (0.6 us each) would be 5% of the sampling time.
        self._rand = random.Random(int(rng.integers(1 << 63))) if rng is not None else None
        self.weights = weights or {}
        self._decay = float(g.limits["depth_decay"])
        self.record, self.keep_spans = record, spans
        self.program: list[tuple[str, list[int], dict[str, Any], Shape]] = []
        self.params = self.macs = self.nodes = 0
        self.reserved: Cost = ZERO
        self._choices: list[tuple[str, str, str]] = []
        self.spans: dict[str, Span] = {}
        self.retries = 0

    @property
    def choices(self) -> dict[str, str]:
        """The decisions taken, ``{"<rule>@<path>": label}``."""
        return {f"{rule}@{path}": label for rule, path, label in self._choices}

    @property
    def sampling(self) -> bool:
        return self.rng is not None

    # ---- bookkeeping ------------------------------------------------------------------------

    def _fail(self, msg: str) -> DeadEnd | SpaceError:
        return DeadEnd(msg) if self.sampling else SpaceError(msg)

    def _emit(self, op: str, inputs: list[int], attrs: dict[str, Any], ins: list[Shape],
              out: Shape | None = None, params: int | None = None, macs: int | None = None) -> tuple[int, Shape]:
        if out is None:
            try:
                items, out, params, macs = self.an.apply(op, attrs, ins)
            except (ShapeError, ValueError, KeyError, TypeError) as e:
                raise self._fail(f"{op} on {', '.join(map(str, ins))}: {e}") from None
            if self.record:
                attrs = dict(items)
        self.nodes += 1
        self.params += params or 0
        self.macs += macs or 0
        if self.rng is not None:
            lim = self.lim
            if lim.max_width and out[0 if len(out) == 3 else -1] > lim.max_width:
                raise DeadEnd(f"{op} gives {out}, wider than {lim.max_width}")
            if (self.nodes > lim.max_nodes or (lim.max_params and self.params > lim.max_params)
                    or (lim.max_macs and self.macs > lim.max_macs)):
                raise DeadEnd("over budget")
        if self.record:
            self.program.append((op, inputs, attrs, out))
        return len(self.program) - 1 if self.record else self.nodes, out

    def _affords(self, c: Cost) -> bool:
        """Whether a completion needing at least ``c`` still fits beside what is used and reserved."""
        lim, r = self.lim, self.reserved
        return (self.nodes + r[0] + c[0] <= lim.max_nodes
                and (not lim.max_params or self.params + r[1] + c[1] <= lim.max_params)
                and (not lim.max_macs or self.macs + r[2] + c[2] <= lim.max_macs))

    def _reserve(self, c: Cost, sign: int) -> None:
        self.reserved = (self.reserved[0] + sign * c[0], self.reserved[1] + sign * c[1],
                         self.reserved[2] + sign * c[2])

    def _choose(self, key_rule: str, path: str, cands: list[tuple[int, float]],
                ok: Callable[[int], bool] | None = None) -> int:
        """Draw one candidate ``(alternative, weight)`` by weight (times the prior's, when it has one).

        With ``ok``, the draw is over the candidates for which ``ok`` holds, testing only those drawn:
        a drawn candidate that fails is removed from ``cands`` (in place) and the draw repeated, the
        same distribution as filtering first, but the feasibility analysis runs only for what is
        drawn instead of for every alternative.
        """
        while True:
            if not cands:
                raise DeadEnd(f"no alternative of '{key_rule}' fits at {path}")
            if len(cands) == 1 and not self.prior:
                i = cands[0][0]
            elif not self.prior:
                r = self._rand.random() * sum([wt for _, wt in cands])  # type: ignore[union-attr]
                acc = 0.0
                i = cands[-1][0]
                for j, wt in cands:
                    acc += wt
                    if r < acc:
                        i = j
                        break
            else:
                i = self._choose_with_prior(key_rule, path, cands)
            if ok is None or ok(i):
                return i
            cands[:] = [c for c in cands if c[0] != i]

    def _choose_with_prior(self, key_rule: str, path: str, cands: list[tuple[int, float]]) -> int:
        w = [wt for _, wt in cands]
        pr = self.prior.get(f"{key_rule}@{path}") or self.prior.get(key_rule)
        if pr:
            labels = self.an.labels(key_rule)
            pw = [wt * float(pr.get(labels[i], 0.0)) for (i, _), wt in zip(cands, w)]
            if sum(pw) > 0:
                w = pw
        if len(cands) == 1:
            return cands[0][0]
        tot = sum(w)
        if tot <= 0:
            raise DeadEnd(f"only zero-weight alternatives of '{key_rule}' fit at {path}")
        r = self._rand.random() * tot  # type: ignore[union-attr]
        acc = 0.0
        for (i, _), wt in zip(cands, w):
            acc += wt
            if r < acc:
                return i
        return cands[-1][0]

    def _order(self, n: int) -> list[int]:
        """``range(n)`` in random order."""
        order = list(range(n))
        self._rand.shuffle(order)  # type: ignore[union-attr]
        return order

    def _record(self, rule: str, path: str, label: str, n_alts: int) -> None:
        if n_alts > 1:
            self._choices.append((rule, path, label))

    def _alt_weights(self, rule: str) -> list[float]:
        return self.weights.get(rule) or self.an.weights(rule)

    # ---- modules ----------------------------------------------------------------------------

    def root(self, s: Shape, given: Derivation | None = None) -> tuple[Derivation, int, Shape]:
        """Sample (or replay) the start rule from input shape ``s``."""
        return self.rule(self.g.start, -1, s, None, self.lim.max_depth, "0", given)

    def rule(self, name: str, x: int, s: Shape, p: Pattern | None, d: int, path: str,
             given: Derivation | None, checked: bool = False) -> tuple[Derivation, int, Shape]:
        """Expand one module rule (``checked``: the caller found the rule completes within budget here)."""
        rule = self.g.rules[name]
        if given is not None:
            if given.rule != name or not 0 <= given.alt < len(rule.alts):
                raise SpaceError(f"derivation node {given.rule}#{given.alt} does not fit rule '{name}'")
            i = given.alt
        else:
            an = self.an
            base = self.weights.get(name)
            if base is None:
                cands = list(an.candidates(name, self.lim.max_depth - d, self._decay))
            else:
                decay = self._decay ** (self.lim.max_depth - d)
                cands = [(k, base[k] * (decay if a.recursive else 1.0))
                         for k, a in enumerate(rule.alts) if base[k] > 0]
            if checked and len(rule.alts) == 1:
                def fits_alt(k: int) -> bool:
                    return True
            elif name in an.op_rules:
                table = an.op_table(name, s, p) if d >= 1 else 0

                def fits_alt(k: int) -> bool:
                    n = table_entry(table, k)
                    return n is not None and self._affords(n)
            else:
                key = an.rule_key(name, s, p, d)

                def fits_alt(k: int) -> bool:
                    n = an.alt_plan(name, k, s, p, d, key)
                    if n is None:
                        return False
                    if self._affords(n):
                        return True
                    n = an.alt(name, k, s, p, d, key)
                    return n is not None and self._affords(n)

            while True:
                i = self._choose(name, path, cands, fits_alt)
                snap = (len(self.program), self.params, self.macs, self.nodes, len(self._choices))
                try:
                    return self._expand(rule, i, None, x, s, p, d, path)
                except DeadEnd:
                    self.retries += 1
                    if self.retries > LOCAL_RETRIES:
                        raise
                    self._restore(snap)
                    cands = [c for c in cands if c[0] != i]
        return self._expand(rule, i, given, x, s, p, d, path)

    def _expand(self, rule, i: int, given: Derivation | None, x: int, s: Shape, p: Pattern | None, d: int,
                path: str) -> tuple[Derivation, int, Shape]:
        name = rule.name
        alt = rule.alts[i]
        if len(rule.alts) > 1:
            self._choices.append((name, path, alt.label))
        fr = _Frame(alt, given)
        start = (self.nodes, self.params, self.macs) if self.keep_spans else ZERO
        f = alt.form
        if isinstance(f, Hole):
            fr.children[f.index], y, out = self.rule(alt.holes[f.index], x, s, p, d, f"{path}.{f.index}",
                                                     self._child(fr, f.index), given is None)
        elif f.head not in COMBINATORS and (d >= 1 or given is not None):  # type: ignore[union-attr]
            y, out = self._op(f, fr, None, [x], [s], p, path)  # type: ignore[arg-type]
        else:
            y, out = self.form(f, fr, x, s, p, d, path)
        if p is not None and out != p and not _match(out, p):
            raise self._fail(f"'{name}' at {path} gives {out}, needs {p}")
        der = Derivation(name, i, tuple(fr.children))  # type: ignore[arg-type]
        if self.keep_spans:
            self.spans[path] = Span(name, s, out, d, self.nodes - start[0], self.params - start[1],
                                    self.macs - start[2])
        return der, y, out

    def _child(self, fr: _Frame, h: int) -> Derivation | None:
        if fr.given is None:
            return None
        if h >= len(fr.given.children):
            raise SpaceError(f"derivation node {fr.given.rule}#{fr.given.alt} lacks child {h}")
        return fr.given.children[h]

    def form(self, f: Form, fr: _Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
        """Walk a module form."""
        if isinstance(f, Hole):
            der, y, out = self.rule(fr.alt.holes[f.index], x, s, p, d, f"{path}.{f.index}",
                                    self._child(fr, f.index))
            fr.children[f.index] = der
            return y, out
        assert isinstance(f, Term)
        if d < 1 and self.sampling:
            raise DeadEnd("depth")
        if f.head == "seq":
            return self._seq(f, fr, x, s, p, d, path)
        if f.head == "branch":
            return self._branch(f, fr, x, s, p, d, path)
        if f.head == "route":
            return self._route(f, fr, x, s, p, d, path)
        return self._op(f, fr, None, [x], [s], p, path)

    def _est(self, forms, fr: _Frame, shapes, d: int) -> Cost:
        total = ZERO
        for f, s in zip(forms, shapes):
            total = _add(total, self.an.form(f, fr.alt, s, None, d, 1) or (1, 0, 0))
        return total

    def _seq(self, f: Term, fr: _Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
        args = f.args
        j = -1
        if self.sampling and p is not None:
            for i in self._order(len(args)):
                if self.an.seq_at(f, fr.alt, s, p, d, int(i)) is not None:
                    j = int(i)
                    break
            else:
                raise DeadEnd("seq cannot reach target")
        cur = s
        last = len(args) - 1
        for i, a in enumerate(args):
            t = None if j < 0 else (cur if i != j else p)
            if i == last or self.rng is None:
                x, cur = self.form(a, fr, x, cur, t, d - 1, path)
                continue
            later = self._est(args[i + 1:], fr, [cur] * len(args), d - 1)
            self._reserve(later, 1)
            try:
                x, cur = self.form(a, fr, x, cur, t, d - 1, path)
            finally:
                self._reserve(later, -1)
        return x, cur

    def _snapshot(self) -> tuple:
        return (len(self.program), self.params, self.macs, self.nodes, len(self._choices))

    def _restore(self, snap: tuple) -> None:
        del self.program[snap[0]:]
        self.params, self.macs, self.nodes = snap[1], snap[2], snap[3]
        del self._choices[snap[4]:]

    def _pick_option(self, slot: Form, fr: _Frame, path: str, ok) -> tuple[Term, _Frame, int | None]:
        """Choose the term of an op or split slot among options for which ``ok(term, owner)`` holds."""
        if isinstance(slot, Term):
            return slot, fr, None
        assert isinstance(slot, Hole)
        name = fr.alt.holes[slot.index]
        rule = self.g.rules[name]
        sub = f"{path}.{slot.index}"
        given = self._child(fr, slot.index)
        if given is not None:
            if given.rule != name or not 0 <= given.alt < len(rule.alts):
                raise SpaceError(f"derivation node {given.rule}#{given.alt} does not fit rule '{name}'")
            i = given.alt
        else:
            base = self._alt_weights(name)
            cands = [(k, base[k]) for k in range(len(rule.alts)) if base[k] > 0]
            i = self._choose(name, sub, cands,
                                  lambda k: ok(rule.alts[k].form, rule.alts[k]))
        alt = rule.alts[i]
        self._record(name, sub, alt.label, len(rule.alts))
        child = _Frame(alt, given)
        fr.children[slot.index] = Derivation(name, i, ())
        return alt.form, child, slot.index  # type: ignore[return-value]

    def _close_option(self, fr: _Frame, hole: int | None, child: _Frame) -> None:
        if hole is not None:
            d = fr.children[hole]
            fr.children[hole] = Derivation(d.rule, d.alt, tuple(child.children))  # type: ignore[union-attr,arg-type]

    def _pick_combo(self, term: Term, owner: _Frame, fits: list[Fit], path: str,
                    ok: Callable[[Fit], bool] | None = None) -> Fit:
        """Choose parameter values one hole at a time among fitting combos (given: replay them).

        ``ok`` (sampling only) further restricts the combos; it is tested lazily, for values drawn.
        """
        if owner.given is not None or not self.sampling:
            picks = tuple((h, self._child(owner, h).alt) for h, _ in (fits[0][PICKS] if fits else ()))  # type: ignore[union-attr]
            match = [f for f in fits if f[PICKS] == picks]
            if not match:
                raise self._fail(f"{term.head} at {path} does not fit its input")
            fit = match[0]
        elif len(fits) == 1 and not fits[0][PICKS]:
            fit = fits[0]
            if not self._affords((1, fit[PARAMS], fit[MACS])):
                raise DeadEnd(f"{term.head} at {path} is over budget")
            if ok is not None and not ok(fit):
                raise DeadEnd(f"{term.head} at {path} has no combo that fits")
            return fit
        else:
            fits = [f for f in fits if self._affords((1, f[PARAMS], f[MACS]))]
            if not fits:
                raise DeadEnd(f"{term.head} at {path} is over budget")
            n = len(fits[0][PICKS])
            for pos in range(n):
                h = fits[0][PICKS][pos][0]
                name = owner.alt.holes[h]
                base = self._alt_weights(name)
                vals = sorted({f[PICKS][pos][1] for f in fits})
                cands = [(i, base[i]) for i in vals if base[i] > 0]
                if ok is None:
                    v = self._choose(name, f"{path}.{h}", cands)
                else:
                    v = self._choose(name, f"{path}.{h}", cands,
                                          lambda i: any(ok(f) for f in fits if f[PICKS][pos][1] == i))
                fits = [f for f in fits if f[PICKS][pos][1] == v]
            fit = fits[0] if ok is None else next((f for f in fits if ok(f)), None)
            if fit is None:
                raise DeadEnd(f"{term.head} at {path} has no combo that fits")
        for h, i in fit[PICKS]:
            name = owner.alt.holes[h]
            self._record(name, f"{path}.{h}", self.g.rules[name].alts[i].label, len(self.g.rules[name].alts))
            owner.children[h] = Derivation(name, i, ())
        return fit

    def _op(self, term: Term, owner: _Frame, _: Any, xs: list[int], ins: list[Shape], p: Pattern | None,
            path: str, extra: tuple = ()) -> tuple[int, Shape]:
        fits = self.an.fits(term, owner.alt, tuple(ins), p, extra)
        fit = self._pick_combo(term, owner, fits, path)
        return self._emit(term.head, xs, dict(fit[ATTRS]), ins, fit[OUT], fit[PARAMS], fit[MACS])

    def _branch(self, f: Term, fr: _Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
        k = len(f.args) - 2
        an = self.an
        splits = {id(t): sh for _, t, _, sh in an.split_options(f, fr.alt, s, k)}

        def split_ok(term: Term, owner: Alternative) -> bool:
            return id(term) in splits and any(
                an.branch_feasible(f, fr.alt, splits[id(term)], m, c, p, d)
                for _, m, mo in an.options(f.args[-1], fr.alt) for c in an.combos(m, mo)[:1])

        sterm, sfr, shole = self._pick_option(f.args[0], fr, path, split_ok)
        if sterm.head == "clone":
            xs, shapes = [x] * k, [s] * k
        else:
            fits = [g for g in (_fit(c, s, 0, 0) for c in an.combos(sterm, sfr.alt))
                    if an.group_shapes(s, k, dict(g[ATTRS]).get("axis")) is not None]
            fit = self._pick_combo(sterm, sfr, fits, f"{path}.{shole}" if shole is not None else path)
            axis = dict(fit[ATTRS]).get("axis")
            xs, shapes = [], []
            for i in range(k):
                y, sh = self._emit("chunk", [x], {"n": k, "index": i, "axis": axis}, [s])
                xs.append(y)
                shapes.append(sh)
        self._close_option(fr, shole, sfr)

        def merge_ok(term: Term, owner: Alternative) -> bool:
            return any(an.branch_feasible(f, fr.alt, shapes, term, c, p, d)
                       for c in an.combos(term, owner)[:1])

        mterm, mfr, mhole = self._pick_option(f.args[-1], fr, path, merge_ok)
        mpath = f"{path}.{mhole}" if mhole is not None else path
        mcombos = [_fit(c, s, 0, 0) for c in an.combos(mterm, mfr.alt)]
        mattrs = dict(self._pick_combo(mterm, mfr, mcombos, mpath)[ATTRS])
        outs: list[Shape] = []
        ys: list[int] = []
        branches = f.args[1:-1]
        first_target = None
        if self.sampling:
            base = an.merge_targets(mterm, mattrs, k, p, None)
            if base is None:
                raise DeadEnd("merge cannot reach target")
            first_target = base[0]
            cands = an.first_candidates(f, fr.alt, shapes, mterm, mattrs, p)
            for i in self._order(len(cands)):
                c = an.first_target_plan(f, fr.alt, shapes, mterm, mattrs, p, d, cands[i])
                if c is None:
                    continue
                if not self._affords(c):
                    c = an.first_target_cost(f, fr.alt, shapes, mterm, mattrs, p, d, cands[i])
                if c is not None and self._affords(c):
                    first_target = cands[i]
                    break
        for attempt in range(SEQ_RETRIES if self.sampling else 1):
            snap = self._snapshot()
            targets = [first_target] + [None] * (k - 1)
            later = self._est(branches[1:], fr, shapes[1:], d - 1) if self.sampling else ZERO
            self._reserve(later, 1)
            try:
                y0, o0 = self.form(branches[0], fr, xs[0], shapes[0], targets[0], d - 1, path)
            finally:
                self._reserve(later, -1)
            if not self.sampling:
                ys, outs = [y0], [o0]
                break
            rest = an.merge_targets(mterm, mattrs, k, p, o0)
            if rest is not None and all(an.reaches(b, fr.alt, sh, t, d - 1)
                                        for b, sh, t in zip(branches[1:], shapes[1:], rest[1:])):
                ys, outs = [y0], [o0]
                break
            self.retries += 1
            self._restore(snap)
        else:
            raise DeadEnd("no first branch fits the others")
        if self.sampling:
            rest = an.merge_targets(mterm, mattrs, k, p, outs[0])
        else:
            rest = [None] * k
        for i in range(1, k):
            later = self._est(branches[i + 1:], fr, shapes[i + 1:], d - 1) if self.sampling else ZERO
            self._reserve(later, 1)
            try:
                y, o = self.form(branches[i], fr, xs[i], shapes[i], rest[i], d - 1, path)  # type: ignore[index]
            finally:
                self._reserve(later, -1)
            ys.append(y)
            outs.append(o)
        y, out = self._emit(mterm.head, ys, mattrs, outs)
        self._close_option(fr, mhole, mfr)
        if p is not None and not _match(out, p):
            raise self._fail(f"branch at {path} gives {out}, needs {p}")
        return y, out

    def _route(self, f: Term, fr: _Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
        an = self.an
        every = an.route_plans(f, fr.alt, s, p)
        inner_ok: dict[int, bool] = {}

        def plan_ok(j: int) -> bool:
            """Whether the routed module can reach plan ``j``'s target (analysed when first asked)."""
            if not self.sampling:
                return True
            if j not in inner_ok:
                pl = every[j]
                inner_ok[j] = an.reaches(f.args[1], fr.alt, pl[3][OUT], pl[8], d - 1)
            return inner_ok[j]

        pterm, pfr, phole = self._pick_option(
            f.args[0], fr, path, lambda t, o: any(pl[1] is t and plan_ok(j) for j, pl in enumerate(every)))
        mine = [j for j, pl in enumerate(every) if pl[1] is pterm]
        seen: list[Fit] = []
        for j in mine:
            if all(every[j][3] is not g for g in seen):
                seen.append(every[j][3])
        if not self.sampling:
            seen = an.fits(pterm, pfr.alt, (s,), None)
        fit = self._pick_combo(pterm, pfr, seen, f"{path}.{phole}" if phole is not None else path,
                               ok=lambda ft: any(every[j][3] is ft and plan_ok(j) for j in mine))
        x, mid = self._emit(pterm.head, [x], dict(fit[ATTRS]), [s], fit[OUT], fit[PARAMS], fit[MACS])
        self._close_option(fr, phole, pfr)
        pre_attrs = dict(fit[ATTRS], _in=s)
        plans = [every[j] for j in mine if every[j][3][PICKS] == fit[PICKS] and plan_ok(j)]
        post_ids = {id(pl[5]) for pl in plans}
        qterm, qfr, qhole = self._pick_option(f.args[2], fr, path,
                                              lambda t, o: id(t) in post_ids)
        qpath = f"{path}.{qhole}" if qhole is not None else path
        qcombo = self._pick_combo(qterm, qfr, [_fit(c, s, 0, 0) for c in an.combos(qterm, qfr.alt)
                                               if an.post_target(qterm, c.attrs, pterm, pre_attrs, mid, p) is not None
                                               or not self.sampling], qpath)
        tgt = an.post_target(qterm, dict(qcombo[ATTRS]), pterm, pre_attrs, mid, p)
        if tgt is None:
            raise self._fail(f"post-routing {qterm.head} at {path} cannot follow {pterm.head}")
        target, extra = tgt
        x, inner = self.form(f.args[1], fr, x, mid, target if self.sampling else None, d - 1, path)
        x, out = self._op_post(qterm, qfr, qcombo, x, inner, extra, path)
        self._close_option(fr, qhole, qfr)
        return x, out

    def _op_post(self, term: Term, owner: _Frame, combo: Fit, x: int, s: Shape, extra: dict[str, Any],
                 path: str) -> tuple[int, Shape]:
        attrs = dict(combo[ATTRS])
        attrs.update(extra)
        return self._emit(term.head, [x], attrs, [s])


