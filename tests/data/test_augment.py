"""Augmentation of training batches: the built-ins, their config table, and what training does with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasmtl.config import ConfigError, parse_config
from nasmtl.data import DataError, multimnist
from nasmtl.data.augment import from_spec, gaussian_noise, shift
from nasmtl.train import Budget, TrainConfig, train
from tests.test_train import TinyNet


def test_shift_moves_each_image_by_at_most_k_pixels() -> None:
    x = torch.zeros(50, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = shift(2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(50))
    where = [divmod(int(img.argmax()), 9) for img in out[:, 0]]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in where) and len(set(where)) > 5
    again = shift(2)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_noise_and_the_config_table() -> None:
    x = torch.zeros(200, 1, 10, 10)
    noisy = gaussian_noise(0.1)(x, torch.Generator().manual_seed(0))
    assert 0.09 < float(noisy.std()) < 0.11
    both = from_spec({"shift": 1, "noise": 0.0})
    assert both is not None and both(x, torch.Generator()).shape == x.shape
    assert from_spec(None) is None and from_spec({}) is None
    with pytest.raises(DataError, match="train.augment: unknown augmentation 'flip' .built-in: shift, noise"):
        from_spec({"flip": 1})
    with pytest.raises(DataError, match=r"train.augment.shift must be a number >= 0, got -1"):
        from_spec({"shift": -1})


def test_training_batches_are_augmented_and_stay_deterministic() -> None:
    data = multimnist(seed=0, n_train=256, n_val=64, n_test=64)
    seen: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return shift(3)(x, g)

    cfg = dict(budget=Budget(steps=6), batch_size=64, seed=1)
    plain = train(TinyNet(data.tasks), data, TrainConfig(**cfg))
    a = train(TinyNet(data.tasks), data, TrainConfig(**cfg, augment=spy))
    assert seen == [(64, *data.input_shape)] * 6                 # every training step, no validation batch
    b = train(TinyNet(data.tasks), data, TrainConfig(**cfg, augment=shift(3)))
    assert a.metrics == b.metrics
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in plain.history]


def test_run_config_augment_reaches_the_evaluator(root: Path) -> None:
    from nasmtl.search.evaluate import build_evaluator, load_space

    table = {"data": {"name": "multimnist", "n_train": 40, "n_val": 20, "n_test": 20},
             "space": {"grammar": str(root / "grammars" / "cnn.lark"), "max_macs": 300_000},
             "objectives": [{"name": "left.accuracy", "direction": "maximize"}],
             "train": {"epochs": 1, "augment": {"shift": 2}}}
    cfg = parse_config(table, "run.toml", str(root))
    assert build_evaluator(cfg, load_space(cfg)).train_config.augment is not None
    table["train"]["augment"] = {"rotate": 10}
    bad = parse_config(table, "run.toml", str(root))
    with pytest.raises(ConfigError, match=r"run.toml: train.augment: unknown augmentation 'rotate'"):
        build_evaluator(bad, load_space(bad))
