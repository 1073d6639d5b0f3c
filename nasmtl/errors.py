"""The one root of nasmtl's user-facing errors.

Every error whose message is meant for the user as it is (a bad file, a bad config, a design that
cannot be built) derives from :class:`NasmtlError`, so a caller, and the ``nasmtl`` command, can
catch them all in one place. Each class also keeps its built-in base (``ValueError``,
``RuntimeError``, ...), so code that catches those still works.
"""

from __future__ import annotations


class NasmtlError(Exception):
    """Base of every error nasmtl reports to the user as one line."""


class CommandError(NasmtlError):
    """An error a command reports to the user as one line (exit code 2)."""


def first_line(e: BaseException, limit: int | None = 200, more: str = "...", empty: str | None = None) -> str:
    """The first line of an exception's message (``empty``, else its type's name, when it has none), cut to
    ``limit`` characters with ``more`` ending a cut line; ``limit=None`` never cuts."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else (type(e).__name__ if empty is None else empty)
    if limit is None or len(line) <= limit:
        return line
    return line[: limit - len(more)] + more


def typed_line(e: BaseException, limit: int = 300) -> str:
    """``"Type: first line"`` of an exception, the line cut after ``limit`` characters and marked "..."; just
    the type's name when it has no message."""
    line = first_line(e, None, empty="")
    line = line if len(line) <= limit else line[:limit] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


__all__ = ["NasmtlError", "CommandError", "first_line", "typed_line"]
