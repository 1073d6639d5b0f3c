"""Checking a read grammar: every rule defined, productive and free of renaming loops, and each form fit for its role.

Roles (module, op, split, parameter value) are given from the start rule down; ops are checked
against the op registry. Every problem is a ``SpaceError`` naming file, line and column.
"""

from __future__ import annotations

from nasmtl.arch import ops as _ops  # noqa: F401  (registers the built-in ops)
from nasmtl.arch.registry import OpError, get_op
from nasmtl.spaces.base import SpaceError
from nasmtl.spaces.grammar_model import COMBINATORS, Alternative, Form, Hole, Rule, Term, Value, grammar_error

SPLITS = ("clone", "group")
AUTO_POST = {"col2im": ("h", "w"), "permute": ("perm",)}
"""Post-routing ops whose attributes may be left out: filled from the matching pre-routing op."""


class _Checker:
    """Gives every reachable rule its role and checks each alternative's form against it."""

    def __init__(self, path: str, rules: dict[str, Rule]) -> None:
        self.path, self.rules = path, rules

    def err(self, alt: Alternative | Rule, reason: str) -> SpaceError:
        return grammar_error(self.path, alt.line, alt.column, reason)

    def assign(self, name: str, role: str, where: Alternative | Rule) -> None:
        if name not in self.rules:
            raise self.err(where, f"rule '{name}' is used but not defined")
        rule = self.rules[name]
        if rule.role == role:
            return
        if rule.role:
            raise self.err(where, f"rule '{name}' is used as {_ROLE_NAMES[role]} here but as "
                                  f"{_ROLE_NAMES[rule.role]} elsewhere")
        rule.role = role
        if sum(a.weight for a in rule.alts) <= 0:
            raise self.err(rule, f"all weights of rule '{name}' are zero")
        for k, alt in enumerate(rule.alts):
            self.form(alt.form, role, alt)
            if isinstance(alt.form, Term) and alt.form.head in COMBINATORS:
                rule.alts[k] = Alternative(alt.items, alt.holes, alt.form, alt.weight, alt.label,
                                           alt.line, alt.column, recursive=True)

    def form(self, f: Form, role: str, alt: Alternative, auto: bool = False) -> None:
        if isinstance(f, Hole):
            if role in ("op", "split") and alt.form is f:
                raise self.err(alt, f"a rule used as {_ROLE_NAMES[role]} lists terms, not other rules")
            self.assign(alt.holes[f.index], role, alt)
            return
        if role == "param":
            if not isinstance(f, Value) and not (isinstance(f, Term) and not f.args and not f.kwargs):
                raise self.err(alt, "a parameter rule lists literal values only")
            return
        if isinstance(f, Value):
            raise self.err(alt, f"a value {f.value!r} where {_ROLE_NAMES[role]} is expected")
        if role == "split":
            if f.head == "clone" and not f.args and not f.kwargs:
                return
            if f.head == "group" and not f.args and [k for k, _ in f.kwargs] in ([], ["axis"]):
                for _, v in f.kwargs:
                    self.form(v, "param", alt)
                return
            raise self.err(alt, f"'{f.head}' is not a split: write clone or group(axis=N)")
        if role == "module" and f.head in COMBINATORS:
            if f.kwargs:
                raise self.err(alt, f"{f.head}(...) takes no key=value arguments")
            n = len(f.args)
            if f.head == "seq":
                if n < 2:
                    raise self.err(alt, "seq(...) needs at least 2 modules")
                for a in f.args:
                    self.form(a, "module", alt)
            elif f.head == "branch":
                if n < 4:
                    raise self.err(alt, "branch(split, module, module, ..., merge) needs a split, "
                                        "2 or more branches and a merge")
                self.form(f.args[0], "split", alt)
                for a in f.args[1:-1]:
                    self.form(a, "module", alt)
                self.form(f.args[-1], "op", alt)
                merge = f.args[-1]
                if isinstance(merge, Term):
                    lo, hi = get_op(merge.head).arity
                    if n - 2 < lo or (hi is not None and n - 2 > hi):
                        raise self.err(alt, f"merge '{merge.head}' cannot take {n - 2} branches")
            else:
                if n != 3:
                    raise self.err(alt, "route(pre, module, post) needs exactly 3 arguments")
                self.form(f.args[0], "op", alt)
                self.form(f.args[1], "module", alt)
                self.form(f.args[2], "op", alt, auto=True)
            return
        if f.head in SPLITS or f.head in COMBINATORS:
            raise self.err(alt, f"'{f.head}' cannot stand where {_ROLE_NAMES[role]} is expected")
        self.op(f, alt, auto)

    def op(self, f: Term, alt: Alternative, auto: bool) -> None:
        try:
            spec = get_op(f.head)
        except OpError as e:
            raise self.err(alt, f"{e}: the op registry does not know it") from None
        if f.args:
            raise self.err(alt, f"write the attributes of op '{f.head}' as name=value")
        given = {k for k, _ in f.kwargs}
        unknown = sorted(given - set(spec.attrs))
        if unknown:
            raise self.err(alt, f"op '{f.head}' has no attribute {', '.join(unknown)} "
                                f"(it accepts: {', '.join(spec.attrs) or 'none'})")
        optional = set(AUTO_POST.get(f.head, ())) if auto else set()
        missing = sorted(k for k, v in spec.attrs.items()
                         if repr(v) == "REQUIRED" and k not in given and k not in optional)
        if missing:
            raise self.err(alt, f"op '{f.head}' needs attribute {', '.join(missing)}")
        for _, v in f.kwargs:
            self.form(v, "param", alt)


_ROLE_NAMES = {"module": "a module", "op": "an op", "split": "a split", "param": "a parameter value"}


def _check_defined(path: str, rules: dict[str, Rule]) -> None:
    for rule in rules.values():
        for alt in rule.alts:
            for h in alt.holes:
                if h not in rules:
                    raise grammar_error(path, alt.line, alt.column, f"rule '{h}' is used but not defined")


def _check_productive(path: str, rules: dict[str, Rule]) -> None:
    """Refuse alternatives that can never derive a finite string."""
    good: set[str] = set()
    changed = True
    while changed:
        changed = False
        for r in rules.values():
            if r.name not in good and any(all(h in good for h in a.holes) for a in r.alts):
                good.add(r.name)
                changed = True
    for r in sorted(rules.values(), key=lambda r: r.line):
        for a in r.alts:
            bad = [h for h in a.holes if h not in good]
            if bad:
                raise grammar_error(path, a.line, a.column,
                                    f"alternative '{a.label}' of rule '{r.name}' can never terminate: rule "
                                    f"'{bad[0]}' has no alternative that ends without recursing forever")


def _check_unit_cycles(path: str, rules: dict[str, Rule]) -> None:
    """Refuse rules that only rename each other in a loop (a: b, b: a)."""
    edges = {r.name: [a for a in r.alts if isinstance(a.form, Hole)] for r in rules.values()}
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for a in edges.get(n, []):
            m = a.holes[0]
            if state.get(m) == 1:
                loop = " -> ".join(trail[trail.index(m):] + [n, m]) if m in trail else f"{n} -> {m}"
                raise grammar_error(path, a.line, a.column, f"rules refer to each other without producing "
                                                            f"anything: {loop}")
            if m not in state:
                visit(m, trail + [n])
        state[n] = 2

    for n in rules:
        if n not in state:
            visit(n, [])


def check_rules(path: str, rules: dict[str, Rule], start: str) -> None:
    """Check the rules read from ``path`` from ``start`` down, giving each its role (in place).

    Alternatives that would share a label are relabelled with their text.
    """
    if not rules:
        raise grammar_error(path, 1, 1, "the file defines no rules")
    if start not in rules:
        raise grammar_error(path, 1, 1, f"start rule '{start}' is not defined (declare one with '//@ start RULE')")
    _check_defined(path, rules)
    _check_productive(path, rules)
    _check_unit_cycles(path, rules)
    for r in rules.values():
        seen: dict[tuple[tuple[str, str], ...], Alternative] = {}
        for a in r.alts:
            if a.items in seen:
                raise grammar_error(path, a.line, a.column, f"rule '{r.name}' has this alternative twice")
            seen[a.items] = a
    _Checker(path, rules).assign(start, "module", rules[start])
    for r in rules.values():
        labels = [a.label for a in r.alts]
        for k, a in enumerate(r.alts):
            if labels.count(a.label) > 1:
                shown = "".join(t if kind == "lit" else f"<{t}>" for kind, t in a.items)
                r.alts[k] = Alternative(a.items, a.holes, a.form, a.weight, shown, a.line, a.column, a.recursive)
