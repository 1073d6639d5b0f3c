"""Transferred design priors: the task-model bank, task embeddings and priors from similar tasks.

``bank`` reads evaluated designs from runs, optuna storages and benchmark tables; ``embedding``
describes tasks (probe network on data, anchor designs on results, choice effects) and compares
them; ``transfer`` turns the most similar tasks' best designs into sampling weights and warm
starts for every sampler; ``tables`` serves TransNAS-Bench-101 as a benchmark table.
"""

__all__ = ["bank", "embedding", "tables", "transfer"]
