"""Shared fixtures of the search tests: the project root and a fast, torch-free evaluator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeEvaluator:
    """Objectives from a hash of the canonical string; optional per-design failures; reports epochs."""

    space: Any
    objectives: list[str] = field(default_factory=lambda: ["left.accuracy", "macs"])
    epochs: int = 2
    fail: Callable[[str], BaseException | None] | None = None
    calls: list[str] = field(default_factory=list)

    def evaluate(self, design: Any, onnx_path: Path, on_epoch: Any = None) -> dict[str, float]:
        key = self.space.encode(design)
        self.calls.append(key)
        if self.fail is not None:
            err = self.fail(key)
            if err is not None:
                raise err
        h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        acc, macs = (h % 1000) / 1000.0, float((h // 1000) % 1000 + 1)
        from nasmtl.search.evaluate import TrialStopped

        for e in range(self.epochs):
            partial = {"left.accuracy": acc * (e + 1) / self.epochs, "macs": macs}
            if on_epoch is not None and on_epoch(e, partial) is False:
                raise TrialStopped(e, partial)
        onnx_path.write_bytes(b"fake")
        values = {"left.accuracy": acc, "macs": macs, "right.accuracy": 1 - acc, "latency_ms": macs / 100}
        return {k: values[k] for k in self.objectives}


@pytest.fixture
def root() -> Path:
    """The project root (grammars/, search_spaces/)."""
    return ROOT


# A tiny real run (MultiMNIST subset, the CNN grammar, one epoch); format with root and trials.
TINY_RUN = """
[data]
name = "multimnist"
n_train = 120
n_val = 60
n_test = 60

[space]
grammar = "{root}/grammars/cnn.lark"
max_macs = 300_000

[[objectives]]
name = "left.accuracy"
direction = "maximize"

[[objectives]]
name = "params"
direction = "minimize"
ref = 100_000

[train]
epochs = 1
batch_size = 40

[search]
sampler = "evolution"
trials = {trials}
population = 3
trial_timeout = 120
"""
