"""The ``nasmtl`` command: one sub-command per module in ``nasmtl.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
this file only discovers them, so adding a command never edits it. Expected errors (bad files,
bad configs) print one clear line and exit 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import pkgutil
import sys
from types import ModuleType
from typing import Sequence

import nasmtl
from nasmtl import commands
from nasmtl.errors import CommandError, NasmtlError

__all__ = ["CommandError", "build_parser", "main"]


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if not info.name.startswith("_"):
            mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered command."""
    parser = argparse.ArgumentParser(
        prog="nasmtl",
        description="Neural architecture search for multi-task models.",
    )
    parser.add_argument("--version", action="version", version=f"nasmtl {nasmtl.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


USER_ERRORS: tuple[type[BaseException], ...] = (NasmtlError, FileNotFoundError, NotImplementedError)
"""Exception types whose message is meant for the user as it is: nasmtl's own root and two built-ins."""


def freeze_startup_heap() -> None:
    """Take the objects made at start-up (torch's alone are about 190k) out of garbage collection.

    They live as long as the process. Left in, every full collection rescans them, a pause of
    about 100 ms that lands in whatever runs next (a grammar draw, a training step); frozen, a
    full collection scans only what the work itself keeps (``gc.freeze``).
    """
    import torch  # noqa: F401  (the bulk of the start-up heap)

    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nasmtl`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    freeze_startup_heap()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("nasmtl: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        kind = "not implemented yet" if isinstance(e, NotImplementedError) else "error"
        print(f"nasmtl {args.command}: {kind}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
