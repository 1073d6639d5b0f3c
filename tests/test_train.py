"""The training loop on real MultiMNIST: determinism, budgets, divergence, early stopping, weighting, metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from nasmtl.data import MultiTaskDataset, Split, Task, multimnist
from nasmtl.train import Budget, TrainConfig, TrainingDiverged, evaluate, predict, train


@pytest.fixture(scope="module")
def data() -> MultiTaskDataset:
    """256 training pairs, 64 validation pairs."""
    return multimnist(seed=0, n_train=256, n_val=64, n_test=64)


class TinyNet(nn.Module):
    """A strided conv trunk shared by one linear head per task."""

    def __init__(self, tasks: tuple[Task, ...], seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten())
        self.heads = nn.ModuleDict({t.name: nn.Linear(4 * 17 * 17, t.n_outputs) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {k: head(h) for k, head in self.heads.items()}


class NaNFor(nn.Module):
    """Wraps a model and makes one task's output NaN from step ``after`` on."""

    def __init__(self, inner: nn.Module, task: str, after: int = 0) -> None:
        super().__init__()
        self.inner, self.task, self.after, self.calls = inner, task, after, 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out[self.task] = out[self.task] * float("nan")
        return out


def _cfg(**kw) -> TrainConfig:
    kw.setdefault("budget", Budget(steps=6))
    kw.setdefault("batch_size", 64)
    return TrainConfig(**kw)


def test_same_seed_same_metrics_different_seed_differs(data):
    a = train(TinyNet(data.tasks), data, _cfg(seed=1))
    b = train(TinyNet(data.tasks), data, _cfg(seed=1))
    c = train(TinyNet(data.tasks), data, _cfg(seed=2))
    assert a.metrics == b.metrics
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_caller_rng_state_untouched(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    model = TinyNet(data.tasks)
    torch.manual_seed(123)
    train(model, data, _cfg(budget=Budget(steps=2)))
    assert torch.equal(torch.rand(3), expected)


def test_budget_steps(data):
    r = train(TinyNet(data.tasks), data, _cfg(budget=Budget(steps=5, epochs=10)))
    assert r.steps == 5 and r.epochs == pytest.approx(5 / 4)
    assert [h["steps"] for h in r.history] == [4, 5]
    assert not r.stopped_early


def test_budget_fractional_epochs_calls_on_epoch_each_time(data):
    seen: list[tuple[int, dict]] = []
    r = train(TinyNet(data.tasks), data, _cfg(budget=Budget(epochs=1.5)),
              on_epoch=lambda e, m: seen.append((e, m)) is None)
    assert r.steps == 6 and r.epochs == pytest.approx(1.5)
    assert [e for e, _ in seen] == [0, 1] and seen[-1][1] == r.metrics
    assert [h["epochs"] for h in r.history] == [1.0, 1.5]
    assert set(r.metrics) == {"left", "right"} and 0.0 <= r.metrics["left"]["accuracy"] <= 1.0


class Slow(nn.Module):
    """A model whose training forward pass takes at least 50 ms."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            time.sleep(0.05)
        return self.inner(x)


def test_budget_seconds(data):
    r = train(Slow(TinyNet(data.tasks)), data, _cfg(budget=Budget(seconds=0.4, steps=10_000)))
    assert 1 <= r.steps < 10_000
    assert r.steps <= 0.4 / 0.05 + 1
    assert r.seconds >= 0.4
    assert len(r.history) >= 1 and r.history[-1]["steps"] == r.steps


def test_nan_output_names_the_task(data):
    with pytest.raises(TrainingDiverged, match=r"task 'right'.*step 3") as err:
        train(NaNFor(TinyNet(data.tasks), "right", after=2), data, _cfg())
    assert err.value.task == "right" and err.value.step == 3


def test_huge_learning_rate_diverges(data):
    with pytest.raises(TrainingDiverged, match=r"task '(left|right)'") as err:
        train(TinyNet(data.tasks), data, _cfg(lr=1e10, optimizer="sgd", budget=Budget(steps=50)))
    assert err.value.step <= 50


def test_on_epoch_false_stops_early(data):
    calls: list[int] = []

    def stop_after_two(epoch: int, metrics: dict) -> bool:
        calls.append(epoch)
        return epoch < 1

    r = train(TinyNet(data.tasks), data, _cfg(budget=Budget(epochs=5)), on_epoch=stop_after_two)
    assert calls == [0, 1] and r.stopped_early and r.steps == 8 and len(r.history) == 2


def test_uncertainty_weighting_learns_log_variances(data):
    r = train(TinyNet(data.tasks), data, _cfg(loss_weighting="uncertainty", lr=1e-2, budget=Budget(steps=8)))
    assert set(r.log_vars) == {"left", "right"}
    assert all(abs(v) > 1e-3 for v in r.log_vars.values())
    assert r.history[0]["log_vars"] != r.history[-1]["log_vars"]
    assert train(TinyNet(data.tasks), data, _cfg()).log_vars is None


def test_zero_task_weight_freezes_that_head(data):
    model = TinyNet(data.tasks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, data, _cfg(task_weights={"right": 0.0}))
    after = model.state_dict()
    assert torch.equal(before["heads.right.weight"], after["heads.right.weight"])
    assert not torch.equal(before["heads.left.weight"], after["heads.left.weight"])
    with pytest.raises(ValueError, match="unknown task 'middle'"):
        train(model, data, _cfg(task_weights={"middle": 1.0}))


def test_progress_line(data, capsys):
    train(TinyNet(data.tasks), data, _cfg(budget=Budget(epochs=1)), progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("epoch 1/1") and "left accuracy" in err[0]


class Lookup(nn.Module):
    """Returns fixed outputs per example, indexed by the example id stored in x[:, 0]."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.table = table
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = x[:, 0].long()
        return {k: v[idx] * self.scale for k, v in self.table.items()}


def test_evaluate_and_predict_against_hand_computed_metrics():
    tasks = (Task("digit", "classification", 3), Task("tags", "multilabel", 2), Task("size", "regression", 1))
    x = np.arange(4, dtype=np.float32)[:, None]
    y = {"digit": np.array([0, 1, 2, 2]), "tags": np.array([[1, 0], [1, 1], [0, 0], [0, 1]], np.float32),
         "size": np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)}
    table = {"digit": torch.tensor([[5.0, 0, 0], [0, 0, 5], [0, 0, 5], [5, 0, 0]]),
             "tags": torch.tensor([[3.0, -3], [3, -3], [-3, -3], [3, 3]]),
             "size": torch.tensor([[1.0], [2.0], [4.0], [4.0]])}
    model = Lookup(table).train()
    m = evaluate(model, Split(x, y), tasks, batch_size=3)
    assert model.training
    assert m["digit"] == {"accuracy": 0.5}
    # tag 0: tp 2 fp 1 fn 0 -> f1 0.8; tag 1: tp 1 fp 0 fn 1 -> 2/3; rows right: 0 and 2 of 4
    assert m["tags"]["mean_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["tags"]["subset_accuracy"] == pytest.approx(0.5)
    # targets mean 2.5, ss_tot 5, ss_res 1
    assert m["size"]["r2"] == pytest.approx(0.8) and m["size"]["mse"] == pytest.approx(0.25)
    out = predict(model, x, batch_size=3)
    assert {k: v.shape for k, v in out.items()} == {"digit": (4, 3), "tags": (4, 2), "size": (4, 1)}
    np.testing.assert_array_equal(out["size"], table["size"].numpy())


def test_trains_mixed_task_kinds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    w = rng.normal(size=(6, 2)).astype(np.float32)
    y = {"c": (x[:, 0] > 0).astype(np.int64), "m": (x[:, 1:3] > 0).astype(np.float32), "r": x @ w}
    tasks = (Task("c", "classification", 2), Task("m", "multilabel", 2), Task("r", "regression", 2))
    data = MultiTaskDataset("toy", tasks, Split(x[:150], {k: v[:150] for k, v in y.items()}),
                            Split(x[150:], {k: v[150:] for k, v in y.items()}),
                            Split(x[150:], {k: v[150:] for k, v in y.items()}), (6,))

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleDict({t.name: nn.Linear(6, t.n_outputs) for t in tasks})

        def forward(self, inp: torch.Tensor) -> dict[str, torch.Tensor]:
            return {k: h(inp) for k, h in self.heads.items()}

    torch.manual_seed(0)
    r = train(Linear(), data, TrainConfig(budget=Budget(epochs=30), batch_size=32, lr=0.05, optimizer="adamw"))
    assert r.metrics["c"]["accuracy"] > 0.9
    assert r.metrics["m"]["mean_f1"] > 0.85
    assert r.metrics["r"]["r2"] > 0.95


def test_budget_and_model_contract_errors(data):
    with pytest.raises(ValueError, match="at least one"):
        Budget()
    with pytest.raises(ValueError, match="steps"):
        Budget(steps=0)

    class NoRight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = TinyNet(data.tasks)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"left": self.inner(x)["left"]}

    with pytest.raises(KeyError, match="right"):
        train(NoRight(), data, _cfg())


def test_cosine_schedule_decays_to_zero_and_changes_training(data):
    from nasmtl.train import scheduled_lr

    assert scheduled_lr(0.01, "constant", 50, 100) == 0.01
    assert scheduled_lr(0.01, "cosine", 0, 100) == pytest.approx(0.01)
    assert scheduled_lr(0.01, "cosine", 50, 100) == pytest.approx(0.005)
    assert scheduled_lr(0.01, "cosine", 99, 100) < 1e-5
    cfg = TrainConfig(budget=Budget(steps=8), batch_size=32, lr=0.01, seed=0, lr_schedule="cosine")
    cos = train(TinyNet(data.tasks), data, cfg).metrics
    again = train(TinyNet(data.tasks), data, cfg).metrics
    const = train(TinyNet(data.tasks), data, TrainConfig(budget=Budget(steps=8), batch_size=32, lr=0.01, seed=0)).metrics
    assert cos == again and cos != const
    with pytest.raises(ValueError, match="lr_schedule"):
        train(TinyNet(data.tasks), data, TrainConfig(budget=Budget(steps=2), lr_schedule="step"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps or epochs"):
        train(TinyNet(data.tasks), data, TrainConfig(budget=Budget(seconds=1.0), lr_schedule="cosine"))
