"""The data model of a parsed grammar file: rules, alternatives and the forms they write.

A grammar file is a lark grammar plus ``//@`` annotations; each alternative writes one *form*, a
term (``seq(...)``, ``branch(...)``, ``route(...)``, a registry op, a split, a parameter value)
with holes where other rules go. ``grammar_reader`` builds this model and ``grammar_check`` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import lark

from nasmtl.spaces.base import SpaceError

COMBINATORS = ("seq", "branch", "route")


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
            self._earley = lark.Lark(lark_text(self.text), start=self.start, parser="earley",
                                     keep_all_tokens=True)
        return self._earley.parse(s)


def lark_text(text: str) -> str:
    """The grammar text handed to lark: the file itself, ignoring whitespace unless it says otherwise."""
    return text if "%ignore" in text else text + "\n%import common.WS\n%ignore WS\n"


def grammar_error(path: str, line: int, col: int, reason: str) -> SpaceError:
    """A ``SpaceError`` naming the grammar file, line and column of a problem."""
    return SpaceError(f"{path}:{line}:{col}: {reason}")


def parse_value(tok: tuple[str, Any]) -> Any:
    """A literal token as a Python value."""
    kind, text = tok
    if kind == "num":
        return float(text) if any(c in text for c in ".e") else int(text)
    low = text.lower()
    return {"true": True, "false": False, "none": None}.get(low, text)


def value_of(form: Form) -> Any:
    """The value a parameter alternative stands for (a bare name is a string value)."""
    if isinstance(form, Value):
        return form.value
    assert isinstance(form, Term)
    return parse_value(("name", form.head))
