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


__all__ = ["NasmtlError", "CommandError"]
