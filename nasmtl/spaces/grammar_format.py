"""Reading grammar files: a lark grammar plus ``//@`` annotations (weights, limits, start rule).

The file is handed to ``lark`` unchanged (annotations are lark comments), so its sentences are
the architecture strings. This module also reads the file itself to learn, per rule, the
alternatives, their weights and places, and each alternative's *form*: the term it writes
(``seq(...)``, ``branch(...)``, ``route(...)``, a registry op, a split, a parameter value) with
holes where other rules go. Every problem is a ``SpaceError`` naming file, line and column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import lark

from nasmtl.arch import ops as _ops  # noqa: F401  (registers the built-in ops)
from nasmtl.arch.registry import OpError, get_op, has_op
from nasmtl.spaces.base import SpaceError

COMBINATORS = ("seq", "branch", "route")
SPLITS = ("clone", "group")
LIMIT_KEYS = {"max_depth": int, "max_nodes": int, "max_params": int, "max_macs": int,
              "max_width": int, "depth_decay": float}
DEFAULT_LIMITS: dict[str, float] = {"max_depth": 8, "max_nodes": 64, "max_params": 0, "max_macs": 0,
                                    "max_width": 0, "depth_decay": 0.75}


@dataclass(frozen=True)
class Hole:
    """A place in a form filled by a sub-derivation of another rule (``index``: which hole)."""

    index: int


@dataclass(frozen=True)
class Value:
    """A literal parameter value (int, float, bool, None, name or tuple)."""

    value: Any


@dataclass(frozen=True)
class Term:
    """``head(arg, ..., key=value, ...)``: a combinator, split or registry op with its arguments."""

    head: str
    args: tuple["Form", ...] = ()
    kwargs: tuple[tuple[str, "Form"], ...] = ()


Form = Union[Term, Hole, Value]


@dataclass(frozen=True)
class Alternative:
    """One alternative of a rule: its lark items, its form, weight and place in the file."""

    items: tuple[tuple[str, str], ...]
    """``("lit", text)`` or ``("rule", name)`` in order."""
    holes: tuple[str, ...]
    form: Form
    weight: float
    label: str
    line: int
    column: int
    recursive: bool = False
    """True when the form nests modules (seq, branch, route): such alternatives fade with depth."""


@dataclass
class Rule:
    """A grammar rule: its alternatives and the role its sentences play (module, op, split, param)."""

    name: str
    alts: list[Alternative]
    line: int
    column: int
    role: str = ""


@dataclass
class GrammarFile:
    """A read and checked grammar file."""

    path: str
    text: str
    start: str
    rules: dict[str, Rule]
    limits: dict[str, float]
    parser: lark.Lark = field(repr=False)
    input_shape: tuple[int, ...] | None = None
    """The input shape the file declares (``//@ input``), used when a run gives none."""
    _earley: lark.Lark | None = field(default=None, repr=False)

    def parse(self, s: str) -> lark.Tree:
        """Parse an architecture string: LALR first, Earley when LALR's greedy lexer gets stuck."""
        if not any(any(c.isspace() for c in t) for r in self.rules.values() for a in r.alts
                   for k, t in a.items if k == "lit"):
            s = "".join(s.split())
        try:
            return self.parser.parse(s)
        except lark.exceptions.UnexpectedInput:
            if self.parser.options.parser == "earley":
                raise
        if self._earley is None:
            self._earley = lark.Lark(_body(self.text), start=self.start, parser="earley",
                                     keep_all_tokens=True)
        return self._earley.parse(s)


def _err(path: str, line: int, col: int, reason: str) -> SpaceError:
    return SpaceError(f"{path}:{line}:{col}: {reason}")


_TOKEN = re.compile(r"""
    (?P<annot>//@[^\n]*)
  | (?P<comment>//[^\n]*)
  | (?P<directive>%[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"i?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<arrow>->)
  | (?P<colon>:)
  | (?P<bar>\|)
  | (?P<ebnf>[()\[\]?*+~.])
  | (?P<nl>\n)
  | (?P<ws>[ \t\r]+)
""", re.VERBOSE)


@dataclass
class _Tok:
    kind: str
    text: str
    line: int
    col: int


def _tokenize(path: str, text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            bad = text[pos]
            if bad == '"':
                raise _err(path, line, col, "unterminated string literal")
            raise _err(path, line, col, f"syntax error: unexpected character {bad!r}")
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            toks.append(_Tok(kind, m.group(), line, col))
        pos = m.end()
        if kind == "nl":
            line, line_start = line + 1, pos
    return toks


# ---- forms: the term an alternative writes, with holes ---------------------------------------

_FORM_TOKEN = re.compile(r"\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:e-?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<p>[(),=\[\]]))")


def _lex_form(items: tuple[tuple[str, str], ...]) -> list[tuple[str, Any]]:
    """Literal text split into tokens; each rule item becomes one ``("hole", index)`` token."""
    out: list[tuple[str, Any]] = []
    holes = 0
    for kind, text in items:
        if kind == "rule":
            out.append(("hole", holes))
            holes += 1
            continue
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _FORM_TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"unexpected {text[pos:].strip()[:10]!r} in {text!r}")
            k = m.lastgroup or ""
            out.append((k, m.group(k)))
            pos = m.end()
    return out


def parse_value(tok: tuple[str, Any]) -> Any:
    """A literal token as a Python value."""
    kind, text = tok
    if kind == "num":
        return float(text) if any(c in text for c in ".e") else int(text)
    low = text.lower()
    return {"true": True, "false": False, "none": None}.get(low, text)


class _FormParser:
    def __init__(self, toks: list[tuple[str, Any]]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, text: str | None = None) -> tuple[str, Any]:
        t = self.peek()
        if t is None or (text is not None and t[1] != text):
            raise ValueError(f"expected {text!r}" if text else "unexpected end")
        self.i += 1
        return t

    def form(self) -> Form:
        t = self.take()
        if t[0] == "hole":
            return Hole(t[1])
        if t[0] == "num":
            return Value(parse_value(t))
        if t[1] == "[":
            vals = []
            while self.peek() is not None and self.peek()[1] != "]":  # type: ignore[index]
                v = self.take()
                if v[0] not in ("num", "name"):
                    raise ValueError("lists hold plain values")
                vals.append(parse_value(v))
                if self.peek() is not None and self.peek()[1] == ",":  # type: ignore[index]
                    self.take(",")
            self.take("]")
            return Value(tuple(vals))
        if t[0] != "name":
            raise ValueError(f"unexpected {t[1]!r}")
        if self.peek() is None or self.peek()[1] != "(":  # type: ignore[index]
            return Term(t[1])
        self.take("(")
        args: list[Form] = []
        kwargs: list[tuple[str, Form]] = []
        while True:
            nxt = self.peek()
            if nxt is not None and nxt[0] == "name" and self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] == "=":
                self.take()
                self.take("=")
                val = self.form()
                if isinstance(val, Term) and not val.args and not val.kwargs:
                    val = Value(parse_value(("name", val.head)))
                kwargs.append((nxt[1], val))
            else:
                if kwargs:
                    raise ValueError("positional argument after key=value")
                args.append(self.form())
            sep = self.take()
            if sep[1] == ")":
                break
            if sep[1] != ",":
                raise ValueError(f"expected ',' or ')', got {sep[1]!r}")
        return Term(t[1], tuple(args), tuple(kwargs))


def _parse_form(items: tuple[tuple[str, str], ...]) -> Form:
    toks = _lex_form(items)
    if not toks:
        raise ValueError("empty alternative")
    p = _FormParser(toks)
    f = p.form()
    if p.peek() is not None:
        raise ValueError(f"text after the term: {p.peek()[1]!r}")  # type: ignore[index]
    return f


def value_of(form: Form) -> Any:
    """The value a parameter alternative stands for (a bare name is a string value)."""
    if isinstance(form, Value):
        return form.value
    assert isinstance(form, Term)
    return parse_value(("name", form.head))


def _label(form: Form, items: tuple[tuple[str, str], ...]) -> str:
    if isinstance(form, Hole):
        return [n for k, n in items if k == "rule"][form.index]
    if isinstance(form, Value):
        return "".join(t for k, t in items)
    return form.head


# ---- reading the file -----------------------------------------------------------------------


def _weights(path: str, t: _Tok, n: int) -> list[float]:
    vals: list[float] = []
    for w in t.text[3:].split():
        try:
            v = float(w)
        except ValueError:
            raise _err(path, t.line, t.col, f"weight {w!r} is not a number") from None
        if not math.isfinite(v):
            raise _err(path, t.line, t.col, f"weight {w!r} is not a finite number")
        if v < 0:
            raise _err(path, t.line, t.col, f"weight {w} is negative")
        vals.append(v)
    if len(vals) != n:
        raise _err(path, t.line, t.col, f"{len(vals)} weight(s) for the {n} alternative(s) on this line")
    return vals


def _directive(path: str, t: _Tok, limits: dict[str, float]) -> str | None:
    """Apply a ``//@ limits ...`` line; return the rule of a ``//@ start RULE`` line."""
    words = t.text[3:].split()
    if not words or words[0] not in ("limits", "start", "input"):
        raise _err(path, t.line, t.col, "an annotation on its own line must be '//@ limits ...', "
                                        "'//@ start RULE' or '//@ input C,H,W' (weights go after "
                                        "their alternatives)")
    if words[0] == "input":
        try:
            shape = tuple(int(v) for v in "".join(words[1:]).split(","))
        except ValueError:
            shape = ()
        if not shape or any(v < 1 for v in shape):
            raise _err(path, t.line, t.col, "write '//@ input 1,36,36' (positive sizes)")
        limits["input"] = shape  # type: ignore[assignment]
        return None
    if words[0] == "start":
        if len(words) != 2:
            raise _err(path, t.line, t.col, "write '//@ start RULE'")
        return words[1]
    for w in words[1:]:
        key, _, val = w.partition("=")
        if key not in LIMIT_KEYS:
            raise _err(path, t.line, t.col, f"unknown limit '{key}' (known: {', '.join(LIMIT_KEYS)})")
        try:
            v = float(val)
        except ValueError:
            raise _err(path, t.line, t.col, f"limit {key} needs a number, got {val!r}") from None
        if not math.isfinite(v) or v < 0 or (key == "depth_decay" and not 0 < v <= 1):
            raise _err(path, t.line, t.col, f"limit {key}={val} is out of range")
        limits[key] = LIMIT_KEYS[key](v)
    return None


def _alternative(path: str, rule: str, toks: list[_Tok], weight: float) -> Alternative:
    its: list[tuple[str, str]] = []
    for t in toks:
        if t.kind == "string":
            if t.text.endswith("i"):
                raise _err(path, t.line, t.col, "case-insensitive literals are not supported")
            its.append(("lit", t.text[1:-1].encode("utf-8").decode("unicode_escape")))
        elif t.kind == "name" and t.text[0].isupper():
            raise _err(path, t.line, t.col, f"terminal '{t.text}' used in rule '{rule}': write parameter "
                                            f"values as a lowercase rule of literals")
        elif t.kind == "name":
            its.append(("rule", t.text))
        elif t.kind == "arrow":
            raise _err(path, t.line, t.col, "aliases (->) are not supported")
        else:
            raise _err(path, t.line, t.col, f"'{t.text}': repetition, optional and grouping operators "
                                            f"are not supported; write recursion and alternatives")
    tup = tuple(its)
    try:
        form = _parse_form(tup)
    except ValueError as e:
        raise _err(path, toks[0].line, toks[0].col,
                   f"alternative of '{rule}' is not one term like name(...): {e}") from None
    holes = tuple(n for k, n in tup if k == "rule")
    return Alternative(tup, holes, form, weight, _label(form, tup), toks[0].line, toks[0].col)


def _is_def(toks: list[_Tok], i: int) -> bool:
    return toks[i].kind == "name" and i + 1 < len(toks) and toks[i + 1].kind == "colon"


def _read(path: str, text: str) -> tuple[dict[str, Rule], dict[str, float], str | None]:
    """Rules with their alternatives and weights, the limits and the declared start rule."""
    toks = _tokenize(path, text)
    rules: dict[str, Rule] = {}
    limits = dict(DEFAULT_LIMITS)
    start: str | None = None
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind in ("nl", "directive"):
            i += 1
        elif t.kind == "annot":
            start = _directive(path, t, limits) or start
            i += 1
        elif _is_def(toks, i) and t.text[0].isupper():
            i += 2
            while i < len(toks) and not _is_def(toks, i):
                i += 1
        elif _is_def(toks, i):
            if t.text.startswith("_"):
                raise _err(path, t.line, t.col, f"rule '{t.text}': names starting with '_' are inlined "
                                                f"by lark and cannot be sampled")
            if t.text in rules:
                raise _err(path, t.line, t.col, f"rule '{t.text}' is defined twice")
            i += 2
            groups: list[list[_Tok]] = [[]]
            weights: dict[int, float] = {}
            while i < len(toks) and not _is_def(toks, i):
                u = toks[i]
                i += 1
                if u.kind == "nl":
                    k = i
                    while k < len(toks) and toks[k].kind in ("nl", "annot", "directive") and not (
                            toks[k].kind == "annot" and any(g and g[0].line == toks[k].line for g in groups)):
                        k += 1
                    if k < len(toks) and toks[k].kind != "bar":
                        break
                    continue
                if u.kind == "directive":
                    continue
                if u.kind == "annot":
                    on_line = [k for k, g in enumerate(groups) if g and g[0].line == u.line]
                    if not on_line:
                        start = _directive(path, u, limits) or start
                        continue
                    weights.update(zip(on_line, _weights(path, u, len(on_line))))
                elif u.kind == "bar":
                    if not groups[-1]:
                        raise _err(path, u.line, u.col, f"rule '{t.text}' has an empty alternative")
                    groups.append([])
                elif u.kind == "colon":
                    raise _err(path, u.line, u.col, "syntax error: unexpected ':'")
                else:
                    groups[-1].append(u)
            if not groups[-1]:
                raise _err(path, t.line, t.col, f"rule '{t.text}' has an empty alternative")
            alts = [_alternative(path, t.text, g, weights.get(k, 1.0)) for k, g in enumerate(groups)]
            rules[t.text] = Rule(t.text, alts, t.line, t.col)
        elif t.kind == "name":
            raise _err(path, t.line, t.col, f"syntax error: '{t.text}' is not followed by ':' "
                                            f"(a rule is written 'name: alternatives')")
        else:
            raise _err(path, t.line, t.col, f"syntax error: unexpected '{t.text}'")
    return rules, limits, start


# ---- checking -------------------------------------------------------------------------------

AUTO_POST = {"col2im": ("h", "w"), "permute": ("perm",)}
"""Post-routing ops whose attributes may be left out: filled from the matching pre-routing op."""


class _Checker:
    """Gives every reachable rule its role and checks each alternative's form against it."""

    def __init__(self, path: str, rules: dict[str, Rule]) -> None:
        self.path, self.rules = path, rules

    def err(self, alt: Alternative | Rule, reason: str) -> SpaceError:
        return _err(self.path, alt.line, alt.column, reason)

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
                    raise _err(path, alt.line, alt.column, f"rule '{h}' is used but not defined")


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
                raise _err(path, a.line, a.column,
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
                raise _err(path, a.line, a.column, f"rules refer to each other without producing "
                                                   f"anything: {loop}")
            if m not in state:
                visit(m, trail + [n])
        state[n] = 2

    for n in rules:
        if n not in state:
            visit(n, [])


def _lark_place(e: Exception) -> tuple[int, int]:
    line, col = getattr(e, "line", None), getattr(e, "column", None)
    if isinstance(line, int) and line > 0:
        return line, int(col or 1)
    m = re.search(r"line (\d+),? col(?:umn)? (\d+)", str(e))
    return (int(m.group(1)), int(m.group(2))) if m else (1, 1)


def _body(text: str) -> str:
    return text if "%ignore" in text else text + "\n%import common.WS\n%ignore WS\n"


def _make_parser(path: str, text: str, start: str) -> lark.Lark:
    body = _body(text)
    try:
        return lark.Lark(body, start=start, parser="lalr", keep_all_tokens=True)
    except lark.exceptions.GrammarError as e:
        if "conflict" not in str(e).lower():
            line, col = _lark_place(e)
            raise _err(path, line, col, "lark: " + str(e).strip().splitlines()[0]) from None
    except lark.exceptions.LarkError as e:
        line, col = _lark_place(e)
        raise _err(path, line, col, "lark: " + str(e).strip().splitlines()[0]) from None
    try:
        return lark.Lark(body, start=start, parser="earley", keep_all_tokens=True)
    except lark.exceptions.LarkError as e:
        line, col = _lark_place(e)
        raise _err(path, line, col, "lark: " + str(e).strip().splitlines()[0]) from None


MAX_GRAMMAR_BYTES = 1 << 20
"""The largest grammar file read (shipped grammars are 1-3 kB)."""


def load_grammar(source: str | Path, text: str | None = None) -> GrammarFile:
    """Read, check and compile a grammar file (or ``text`` under the name ``source``)."""
    path = str(source)
    if text is None:
        try:
            size = Path(path).stat().st_size
            if size > MAX_GRAMMAR_BYTES:
                raise SpaceError(f"{path}: the grammar file has {size:,} bytes; grammar files are at most "
                                 f"{MAX_GRAMMAR_BYTES:,} (a grammar is rules, not data)")
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise SpaceError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); "
                             "a grammar file is lark text") from None
        except OSError as e:
            raise SpaceError(f"{path}: cannot read grammar file: {e.strerror or e}") from None
    rules, limits, start = _read(path, text)
    input_shape = limits.pop("input", None)
    start = start or "start"
    if not rules:
        raise _err(path, 1, 1, "the file defines no rules")
    if start not in rules:
        raise _err(path, 1, 1, f"start rule '{start}' is not defined (declare one with '//@ start RULE')")
    _check_defined(path, rules)
    _check_productive(path, rules)
    _check_unit_cycles(path, rules)
    for r in rules.values():
        seen: dict[tuple[tuple[str, str], ...], Alternative] = {}
        for a in r.alts:
            if a.items in seen:
                raise _err(path, a.line, a.column, f"rule '{r.name}' has this alternative twice")
            seen[a.items] = a
    _Checker(path, rules).assign(start, "module", rules[start])
    for r in rules.values():
        labels = [a.label for a in r.alts]
        for k, a in enumerate(r.alts):
            if labels.count(a.label) > 1:
                shown = "".join(t if kind == "lit" else f"<{t}>" for kind, t in a.items)
                r.alts[k] = Alternative(a.items, a.holes, a.form, a.weight, shown, a.line, a.column, a.recursive)
    parser = _make_parser(path, text, start)
    return GrammarFile(path, text, start, rules, limits, parser, input_shape)  # type: ignore[arg-type]
