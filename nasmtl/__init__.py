"""nasmtl: neural architecture search for multi-task models.

``nasmtl.run_search(config, name=..., storage=...)`` runs a search and returns a ``SearchRun``
(``pareto()``, ``retrain(trial)``, ``export(...)``, ``final()``); ``nasmtl.load_run(path)`` opens one
(``nasmtl.api``). Both are imported on first use, so ``import nasmtl`` stays light. Every error meant
for the user derives from ``nasmtl.NasmtlError`` (``nasmtl.errors``).
"""

from typing import Any

from nasmtl.errors import NasmtlError

__version__ = "0.1.0"
__all__ = ["NasmtlError", "__version__", "load_run", "run_search"]


def __getattr__(name: str) -> Any:
    """``run_search`` and ``load_run`` from ``nasmtl.api``, imported when first asked for (``nasmtl.search``
    is the search engine's package, so the function has another name)."""
    if name in ("run_search", "load_run", "SearchRun", "Member"):
        from nasmtl import api

        return getattr(api, name)
    raise AttributeError(f"module 'nasmtl' has no attribute {name!r}")
