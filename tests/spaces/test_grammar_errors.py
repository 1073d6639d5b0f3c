"""Bad grammar files are refused at load time with file, line, column and a one-line reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nasmtl.spaces.base import SpaceError
from nasmtl.spaces.grammar import GrammarSpace

GOOD = '''//@ start net
net: "seq(" m "," m ")"
m: "relu" | "linear(out=" w ")"   //@ 1 2
w: "8" | "16"
'''


def _load(tmp_path: Path, text: str) -> SpaceError:
    path = tmp_path / "bad.lark"
    path.write_text(text)
    with pytest.raises(SpaceError) as e:
        GrammarSpace.from_file(path, (4,))
    msg = str(e.value)
    assert "\n" not in msg
    return e.value


def _place(err: SpaceError, tmp_path: Path) -> tuple[int, int]:
    m = re.match(re.escape(str(tmp_path / "bad.lark")) + r":(\d+):(\d+): ", str(err))
    assert m, f"no file:line:col in {err}"
    return int(m.group(1)), int(m.group(2))


def test_good_grammar_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.lark"
    path.write_text(GOOD)
    space = GrammarSpace.from_file(path, (4,))
    assert [a.weight for a in space.grammar.rules["m"].alts] == [1.0, 2.0]


@pytest.mark.parametrize("text, line, col, reason", [
    (GOOD.replace('m: "relu"', 'm "relu"'), 3, 1, "not followed by ':'"),
    (GOOD.replace('"8" | "16"', '"8" | "16'), 4, 10, "unterminated string"),
    (GOOD.replace('"relu" |', '"relu" ( |'), 3, 11, "not supported"),
    (GOOD.replace('w: "8"', 'width: "8"'), 3, 13, "rule 'w' is used but not defined"),
    (GOOD.replace('"relu"', '"relux"'), 3, 4, "unknown op 'relux'"),
    (GOOD.replace('"linear(out="', '"linear(width="'), 3, 13, "no attribute width"),
    (GOOD + 'loop: "seq(" loop "," m ")"\n', 5, 7, "can never terminate"),
    (GOOD.replace('net: "seq(" m "," m ")"', 'net: "seq(" m "," deep ")"\ndeep: "seq(" deep "," m ")"'), 2, 6,
     "can never terminate"),
    (GOOD.replace("//@ 1 2", "//@ 1 -2"), 3, 35, "negative"),
    (GOOD.replace("//@ 1 2", "//@ 1 two"), 3, 35, "not a number"),
    (GOOD.replace("//@ 1 2", "//@ 1 nan"), 3, 35, "not a finite number"),
    (GOOD.replace("//@ 1 2", "//@ 0 0"), 3, 1, "all weights of rule 'm' are zero"),
    (GOOD.replace("//@ 1 2", "//@ 1"), 3, 35, "1 weight(s) for the 2 alternative(s)"),
])
def test_bad_grammars_are_refused(tmp_path: Path, text: str, line: int, col: int, reason: str) -> None:
    err = _load(tmp_path, text)
    assert reason in str(err)
    assert _place(err, tmp_path) == (line, col)


def test_wrong_roles_and_shapes_are_refused(tmp_path: Path) -> None:
    err = _load(tmp_path, GOOD.replace('"linear(out=" w ")"', '"linear(out=" m ")"'))
    assert "used as a parameter value here but as a module elsewhere" in str(err)
    err = _load(tmp_path, GOOD.replace('"relu"', '"branch(clone," m "," m "," m ",matmul)"'))
    assert "cannot take 3 branches" in str(err)


def test_missing_file_and_unbuildable_input(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="cannot read grammar file"):
        GrammarSpace.from_file(tmp_path / "nope.lark")
    path = tmp_path / "img.lark"
    path.write_text('//@ start net\nnet: "conv(out=4,k=3)"\n')
    with pytest.raises(SpaceError, match="no design of this grammar fits input shape"):
        GrammarSpace.from_file(path, (4,))
