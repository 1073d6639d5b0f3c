"""Static feasibility analysis of a grammar: what completing a rule from a shape to a target costs at least.

``Analysis.rule(name, in_shape, target, depth)`` gives the fewest op nodes (and least params and
MACs) any completion needs, or None. A target is a shape pattern (``None`` entries are free); it
arises where merges need equal shapes and where post-routing must invert pre-routing. The
walker (``grammar_walk``) consults these memoised bounds so that every choice can still complete.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping, NamedTuple

from nasmtl.arch.registry import Shape, ShapeError, get_op
from nasmtl.spaces.grammar_model import COMBINATORS, Alternative, Form, GrammarFile, Hole, Term, value_of

Pattern = tuple  # tuple[int | None, ...] or None for "anything"

SAME_SHAPE_OPS = frozenset({"identity", "dropout", "relu", "gelu", "sigmoid", "tanh", "softmax",
                            "batchnorm", "layernorm", "posenc"})
HORIZON = 1
"""Combinator levels the static analysis looks ahead; beyond it, untargeted modules are assumed to
complete (identity-like ops exist) and targeted ones are not relied on."""
NESTED = 100
"""Ordering weight of a combinator among alternatives tried for feasibility (after ops and references)."""


Cost = tuple  # (op nodes, params, MACs): lower bounds of what a completion needs


def add_cost(a: Cost, b: Cost) -> Cost:
    """The part-wise sum of two costs."""
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


def shape_matches(shape: Shape, pattern: Pattern | None) -> bool:
    """Whether ``shape`` fits ``pattern`` (None, or a tuple whose ``None`` entries are free)."""
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


class Combo(NamedTuple):
    """One assignment of an op term's parameter holes: ``{hole index: value alternative}``."""

    picks: tuple[tuple[int, int], ...]
    attrs: dict[str, Any]


Fit = tuple
"""A combo that fits given input shapes: ``(picks, attribute items, out shape, params, MACs)``,
indexed by the constants below. Only plain tuples of numbers and strings, which the garbage
collector stops tracking (it never untracks tuples holding a dict, a NamedTuple or a dataclass):
a memo of hundreds of thousands of fits then adds nothing to full-collection pauses in later draws."""
PICKS, ATTRS, OUT, PARAMS, MACS = range(5)


def combo_fit(combo: Combo, out: Shape, params: int, macs: int) -> Fit:
    """A combo as a ``Fit`` with the given output shape and costs."""
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
        self._combos: dict[int, list[Combo]] = {}
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

    def combos(self, term: Term, owner: Alternative) -> list[Combo]:
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
            out.append(Combo(tuple((h, i) for (_, h), i in zip(holes, pick)), attrs))
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
            every = tuple(f for f in every if shape_matches(f[OUT], pattern))
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
                    if p is None or shape_matches(fit[OUT], p):
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
                            return add_cost(n, (1 + (k if shapes[0] != s else 0), 0, 0))
            return None
        for plan in self.route_plans(f, alt, s, p):
            n = self.plan(f.args[1], alt, plan[3][OUT], plan[8], d - 1, h)
            if n is not None:
                return add_cost(n, (2, plan[3][PARAMS], plan[3][MACS]))
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
            total = add_cost(total, n)
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
                        best = _min(best, add_cost(n, (1 + (k if shapes[0] != s else 0), 0, 0)))
        return best

    def first_candidates(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                         attrs: Mapping[str, Any], p: Pattern | None) -> list[Shape]:
        """Outputs the first branch may aim for (one op away) that the merge accepts as its first input."""
        base = self.merge_targets(merge, attrs, len(shapes), p, None)
        if base is None:
            return []
        return [t for t in self.one_op_outputs(f.args[1], alt, shapes[0]) if shape_matches(t, base[0])]

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
            total = None if n is None else add_cost(total, n)
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
            total = None if n is None else add_cost(total, n)
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
            total = add_cost(total, n)
        return total

    def branch_feasible(self, f: Term, alt: Alternative, shapes: list[Shape], merge: Term,
                        combo: Combo, p: Pattern | None, d: int) -> bool:
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
                best = _min(best, add_cost(n, (2, fit[PARAMS], fit[MACS])))
        return best
