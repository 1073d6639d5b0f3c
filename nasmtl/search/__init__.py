"""The search engine: optuna studies over any ``SearchSpace``, multi-objective selection, pruning, workers."""

from nasmtl.search.hypervolume import hypervolume
from nasmtl.search.pareto import crowding_distance, dominates, non_dominated_sort, pareto_indices

__all__ = ["crowding_distance", "dominates", "hypervolume", "non_dominated_sort", "pareto_indices"]
