"""One error root: every user-facing error class derives from NasmtlError and the CLI reports it as one line."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import nasmtl
from nasmtl import cli
from nasmtl.errors import NasmtlError


def _error_classes() -> list[type]:
    """Every exception class defined in a nasmtl module (imported from where it is defined)."""
    found = {}
    for info in pkgutil.walk_packages(nasmtl.__path__, "nasmtl."):
        try:
            mod = importlib.import_module(info.name)
        except ImportError:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CONTROL_FLOW = {"TrialTimeout", "TrialStopped", "DeadEnd"}
"""Signals caught inside the engine or the sampler (a trial out of time, pruned, a draw that hit a limit): never shown."""


def test_every_error_class_has_the_one_root():
    classes = _error_classes()
    names = {c.__name__ for c in classes}
    assert {"ConfigError", "DataError", "BankError", "PredictorError", "BenchmarkError", "OnnxError",
            "SpaceError", "CommandError", "StorageError"} <= names
    assert [c.__name__ for c in classes if not issubclass(c, NasmtlError) and c.__name__ not in CONTROL_FLOW] == []


def test_built_in_bases_are_kept():
    from nasmtl.config import ConfigError
    from nasmtl.onnx.graph import OnnxError

    assert issubclass(ConfigError, ValueError) and issubclass(OnnxError, RuntimeError)


@pytest.mark.parametrize("cls_path", ["nasmtl.priors.bank:BankError", "nasmtl.predict.model:PredictorError",
                                      "nasmtl.nasbench.table:BenchmarkError"])
def test_cli_reports_any_nasmtl_error_as_one_line(cls_path, monkeypatch, capsys):
    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)

    def boom(args):
        raise cls("bank.json:3: broken record")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_run(parser, boom))
    assert cli.main(["sample", "g.lark"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nasmtl sample: error: bank.json:3: broken record"]


def _with_run(parser, fn):
    """The parser, with the ``sample`` command's run function replaced by ``fn``."""
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices["sample"].set_defaults(_run=fn)
    return parser
