"""Reading a grammar file (a lark grammar plus ``//@`` annotations: weights, limits, start rule) into the model.

The file is handed to ``lark`` unchanged (annotations are lark comments), so its sentences are
the architecture strings. This module also reads the file itself to learn, per rule, the
alternatives, their weights and places, and each alternative's form (``grammar_model``). Every
problem is a ``SpaceError`` naming file, line and column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lark

from nasmtl.errors import first_line
from nasmtl.spaces.base import SpaceError
from nasmtl.spaces.grammar_check import check_rules
from nasmtl.spaces.grammar_model import (Alternative, Form, GrammarFile, Hole, Rule, Term, Value, grammar_error,
                                         lark_text, parse_value)

LIMIT_KEYS = {"max_depth": int, "max_nodes": int, "max_params": int, "max_macs": int,
              "max_width": int, "depth_decay": float}
DEFAULT_LIMITS: dict[str, float] = {"max_depth": 8, "max_nodes": 64, "max_params": 0, "max_macs": 0,
                                    "max_width": 0, "depth_decay": 0.75}


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
                raise grammar_error(path, line, col, "unterminated string literal")
            raise grammar_error(path, line, col, f"syntax error: unexpected character {bad!r}")
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
            raise grammar_error(path, t.line, t.col, f"weight {w!r} is not a number") from None
        if not math.isfinite(v):
            raise grammar_error(path, t.line, t.col, f"weight {w!r} is not a finite number")
        if v < 0:
            raise grammar_error(path, t.line, t.col, f"weight {w} is negative")
        vals.append(v)
    if len(vals) != n:
        raise grammar_error(path, t.line, t.col, f"{len(vals)} weight(s) for the {n} alternative(s) on this line")
    return vals


def _directive(path: str, t: _Tok, limits: dict[str, float]) -> str | None:
    """Apply a ``//@ limits ...`` line; return the rule of a ``//@ start RULE`` line."""
    words = t.text[3:].split()
    if not words or words[0] not in ("limits", "start", "input"):
        raise grammar_error(path, t.line, t.col, "an annotation on its own line must be '//@ limits ...', "
                                                 "'//@ start RULE' or '//@ input C,H,W' (weights go after "
                                                 "their alternatives)")
    if words[0] == "input":
        try:
            shape = tuple(int(v) for v in "".join(words[1:]).split(","))
        except ValueError:
            shape = ()
        if not shape or any(v < 1 for v in shape):
            raise grammar_error(path, t.line, t.col, "write '//@ input 1,36,36' (positive sizes)")
        limits["input"] = shape  # type: ignore[assignment]
        return None
    if words[0] == "start":
        if len(words) != 2:
            raise grammar_error(path, t.line, t.col, "write '//@ start RULE'")
        return words[1]
    for w in words[1:]:
        key, _, val = w.partition("=")
        if key not in LIMIT_KEYS:
            raise grammar_error(path, t.line, t.col, f"unknown limit '{key}' (known: {', '.join(LIMIT_KEYS)})")
        try:
            v = float(val)
        except ValueError:
            raise grammar_error(path, t.line, t.col, f"limit {key} needs a number, got {val!r}") from None
        if not math.isfinite(v) or v < 0 or (key == "depth_decay" and not 0 < v <= 1):
            raise grammar_error(path, t.line, t.col, f"limit {key}={val} is out of range")
        limits[key] = LIMIT_KEYS[key](v)
    return None


def _alternative(path: str, rule: str, toks: list[_Tok], weight: float) -> Alternative:
    its: list[tuple[str, str]] = []
    for t in toks:
        if t.kind == "string":
            if t.text.endswith("i"):
                raise grammar_error(path, t.line, t.col, "case-insensitive literals are not supported")
            its.append(("lit", t.text[1:-1].encode("utf-8").decode("unicode_escape")))
        elif t.kind == "name" and t.text[0].isupper():
            raise grammar_error(path, t.line, t.col, f"terminal '{t.text}' used in rule '{rule}': write parameter "
                                                     f"values as a lowercase rule of literals")
        elif t.kind == "name":
            its.append(("rule", t.text))
        elif t.kind == "arrow":
            raise grammar_error(path, t.line, t.col, "aliases (->) are not supported")
        else:
            raise grammar_error(path, t.line, t.col, f"'{t.text}': repetition, optional and grouping operators "
                                                     f"are not supported; write recursion and alternatives")
    tup = tuple(its)
    try:
        form = _parse_form(tup)
    except ValueError as e:
        raise grammar_error(path, toks[0].line, toks[0].col,
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
                raise grammar_error(path, t.line, t.col, f"rule '{t.text}': names starting with '_' are inlined "
                                                         f"by lark and cannot be sampled")
            if t.text in rules:
                raise grammar_error(path, t.line, t.col, f"rule '{t.text}' is defined twice")
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
                        raise grammar_error(path, u.line, u.col, f"rule '{t.text}' has an empty alternative")
                    groups.append([])
                elif u.kind == "colon":
                    raise grammar_error(path, u.line, u.col, "syntax error: unexpected ':'")
                else:
                    groups[-1].append(u)
            if not groups[-1]:
                raise grammar_error(path, t.line, t.col, f"rule '{t.text}' has an empty alternative")
            alts = [_alternative(path, t.text, g, weights.get(k, 1.0)) for k, g in enumerate(groups)]
            rules[t.text] = Rule(t.text, alts, t.line, t.col)
        elif t.kind == "name":
            raise grammar_error(path, t.line, t.col, f"syntax error: '{t.text}' is not followed by ':' "
                                                     f"(a rule is written 'name: alternatives')")
        else:
            raise grammar_error(path, t.line, t.col, f"syntax error: unexpected '{t.text}'")
    return rules, limits, start


# ---- compiling and loading ------------------------------------------------------------------


def _lark_place(e: Exception) -> tuple[int, int]:
    line, col = getattr(e, "line", None), getattr(e, "column", None)
    if isinstance(line, int) and line > 0:
        return line, int(col or 1)
    m = re.search(r"line (\d+),? col(?:umn)? (\d+)", str(e))
    return (int(m.group(1)), int(m.group(2))) if m else (1, 1)


def _make_parser(path: str, text: str, start: str) -> lark.Lark:
    body = lark_text(text)
    try:
        return lark.Lark(body, start=start, parser="lalr", keep_all_tokens=True)
    except lark.exceptions.GrammarError as e:
        if "conflict" not in str(e).lower():
            line, col = _lark_place(e)
            raise grammar_error(path, line, col, "lark: " + first_line(e, None)) from None
    except lark.exceptions.LarkError as e:
        line, col = _lark_place(e)
        raise grammar_error(path, line, col, "lark: " + first_line(e, None)) from None
    try:
        return lark.Lark(body, start=start, parser="earley", keep_all_tokens=True)
    except lark.exceptions.LarkError as e:
        line, col = _lark_place(e)
        raise grammar_error(path, line, col, "lark: " + first_line(e, None)) from None


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
    check_rules(path, rules, start)
    parser = _make_parser(path, text, start)
    return GrammarFile(path, text, start, rules, limits, parser, input_shape)  # type: ignore[arg-type]
