"""Multi-task data sets: task kinds with losses and metrics, the built-in MultiMNIST, and file loaders."""

from nasmtl.data.dataset import DataError, MultiTaskDataset, Split, infer_kind
from nasmtl.data.folder import load_folder
from nasmtl.data.loaders import available_datasets, load_csv, load_dataset, load_idx, load_npz, read_idx
from nasmtl.data.multimnist import multimnist, source_digits, source_pools
from nasmtl.data.tasks import TASK_KINDS, Task, TaskKind, accuracy, mean_f1, r2_score

__all__ = [
    "DataError", "MultiTaskDataset", "Split", "infer_kind", "available_datasets", "load_csv", "load_dataset",
    "load_folder", "load_idx", "load_npz", "read_idx", "multimnist", "source_digits", "source_pools", "TASK_KINDS", "Task",
    "TaskKind", "accuracy", "mean_f1", "r2_score",
]
