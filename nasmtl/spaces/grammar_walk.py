"""Shape-aware top-down sampling and replay of grammar derivations.

One walker does both: sampling (choosing alternatives with the file's weights, filtered so that
every choice can still complete, as ``grammar_analysis`` bounds it) and replay (following a given
derivation to compute shapes, costs and the op program), so branches and routes are sampled to
fit rather than drawn and thrown away.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from nasmtl.arch.registry import Shape, ShapeError
from nasmtl.spaces.base import Prior, SpaceError
from nasmtl.spaces.grammar_analysis import (ATTRS, MACS, OUT, PARAMS, PICKS, ZERO, Analysis, Cost, Fit, Pattern,
                                            add_cost, combo_fit, shape_matches, table_entry)
from nasmtl.spaces.grammar_model import COMBINATORS, Alternative, Form, GrammarFile, Hole, Term

SEQ_RETRIES = 8
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


class Frame:
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
        fr = Frame(alt, given)
        start = (self.nodes, self.params, self.macs) if self.keep_spans else ZERO
        f = alt.form
        if isinstance(f, Hole):
            fr.children[f.index], y, out = self.rule(alt.holes[f.index], x, s, p, d, f"{path}.{f.index}",
                                                     self._child(fr, f.index), given is None)
        elif f.head not in COMBINATORS and (d >= 1 or given is not None):  # type: ignore[union-attr]
            y, out = self._op(f, fr, None, [x], [s], p, path)  # type: ignore[arg-type]
        else:
            y, out = self.form(f, fr, x, s, p, d, path)
        if p is not None and out != p and not shape_matches(out, p):
            raise self._fail(f"'{name}' at {path} gives {out}, needs {p}")
        der = Derivation(name, i, tuple(fr.children))  # type: ignore[arg-type]
        if self.keep_spans:
            self.spans[path] = Span(name, s, out, d, self.nodes - start[0], self.params - start[1],
                                    self.macs - start[2])
        return der, y, out

    def _child(self, fr: Frame, h: int) -> Derivation | None:
        if fr.given is None:
            return None
        if h >= len(fr.given.children):
            raise SpaceError(f"derivation node {fr.given.rule}#{fr.given.alt} lacks child {h}")
        return fr.given.children[h]

    def form(self, f: Form, fr: Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
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

    def _est(self, forms, fr: Frame, shapes, d: int) -> Cost:
        total = ZERO
        for f, s in zip(forms, shapes):
            total = add_cost(total, self.an.form(f, fr.alt, s, None, d, 1) or (1, 0, 0))
        return total

    def _seq(self, f: Term, fr: Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
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

    def _pick_option(self, slot: Form, fr: Frame, path: str, ok) -> tuple[Term, Frame, int | None]:
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
        child = Frame(alt, given)
        fr.children[slot.index] = Derivation(name, i, ())
        return alt.form, child, slot.index  # type: ignore[return-value]

    def _close_option(self, fr: Frame, hole: int | None, child: Frame) -> None:
        if hole is not None:
            d = fr.children[hole]
            fr.children[hole] = Derivation(d.rule, d.alt, tuple(child.children))  # type: ignore[union-attr,arg-type]

    def _pick_combo(self, term: Term, owner: Frame, fits: list[Fit], path: str,
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

    def _op(self, term: Term, owner: Frame, _: Any, xs: list[int], ins: list[Shape], p: Pattern | None,
            path: str, extra: tuple = ()) -> tuple[int, Shape]:
        fits = self.an.fits(term, owner.alt, tuple(ins), p, extra)
        fit = self._pick_combo(term, owner, fits, path)
        return self._emit(term.head, xs, dict(fit[ATTRS]), ins, fit[OUT], fit[PARAMS], fit[MACS])

    def _branch(self, f: Term, fr: Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
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
            fits = [g for g in (combo_fit(c, s, 0, 0) for c in an.combos(sterm, sfr.alt))
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
        mcombos = [combo_fit(c, s, 0, 0) for c in an.combos(mterm, mfr.alt)]
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
        if p is not None and not shape_matches(out, p):
            raise self._fail(f"branch at {path} gives {out}, needs {p}")
        return y, out

    def _route(self, f: Term, fr: Frame, x: int, s: Shape, p: Pattern | None, d: int, path: str) -> tuple[int, Shape]:
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
        qcombo = self._pick_combo(qterm, qfr, [combo_fit(c, s, 0, 0) for c in an.combos(qterm, qfr.alt)
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

    def _op_post(self, term: Term, owner: Frame, combo: Fit, x: int, s: Shape, extra: dict[str, Any],
                 path: str) -> tuple[int, Shape]:
        attrs = dict(combo[ATTRS])
        attrs.update(extra)
        return self._emit(term.head, [x], attrs, [s])
