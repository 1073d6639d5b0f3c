"""Transferred design priors: the task-model bank, task embeddings and priors from similar tasks.

``bank`` reads evaluated designs from runs, optuna storages and benchmark tables; ``embedding``
describes tasks (probe network on data, anchor designs on results, choice effects) and compares
them; ``transfer`` turns the most similar tasks' best designs into sampling weights and warm
starts for every sampler; ``tables`` serves TransNAS-Bench-101 as a benchmark table. The names
below are imported from those modules when first asked for (``transfer.transfer`` keeps its
module's name, so it is not one of them).
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "Bank": "bank", "BankError": "bank", "Record": "bank", "percentiles": "bank", "records_from_graphgym": "bank",
    "records_from_table": "bank", "records_from_transnas": "bank",
    "anchor_embedding": "embedding", "choose_anchors": "embedding", "decision_options": "embedding",
    "effect_embedding": "embedding", "rank_correlation": "embedding", "scores_by_task": "embedding",
    "similarity": "embedding",
    "transnas_table": "tables",
    "Priors": "transfer", "apply_priors": "transfer", "bank_after_run": "transfer", "with_priors": "transfer",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, imported from its module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    return value
