"""The predictor strategy's transferred source (warm start, prior mean) and its skipping of dominated candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from nasmtl.config import ConfigError, parse_config
from nasmtl.predict.model import PredictorError, fit_ensemble, load_predictor, save_predictor
from nasmtl.predict.source import NB201_IMAGENET16, onnx_source
from nasmtl.predict.strategy import ChoiceOneHot, PredictorStrategy, optimistic_reachable
from nasmtl.spaces.cell import CellSpace

torch.set_num_threads(1)
GOOD = {"nor_conv_3x3": 1.0, "nor_conv_1x1": 0.6, "skip_connect": 0.2, "avg_pool_3x3": 0.1, "none": 0.0}


def quality(space: CellSpace, x: object, shift: float = 0.0) -> float:
    """A synthetic objective: conv-heavy cells are good (``shift`` perturbs one op, like a related task)."""
    ch = space.choices(x)
    return sum(GOOD[o] for o in ch.values()) + shift * (ch["edge_5"] == "avg_pool_3x3")


@pytest.fixture
def space() -> CellSpace:
    return CellSpace.from_file("nb201")


@pytest.fixture
def source_file(space: CellSpace, tmp_path: Path) -> Path:
    """A predictor of a related source task (one-hot features), trained on 150 random cells and saved as ONNX."""
    enc = ChoiceOneHot(space)
    rng = np.random.default_rng(7)
    cells = [space.sample(rng) for _ in range(150)]
    x = np.stack([enc(c) for c in cells])
    y = np.array([[quality(space, c, shift=0.5)] for c in cells])
    net = fit_ensemble(x, y, members=3, hidden=16, steps=200, lr=1e-2, seed=0)
    save_predictor(net, tmp_path / "src.onnx", ["source.score"], {"table": "synthetic"}, {}, encoding="choices one-hot")
    return tmp_path / "src.onnx"


def test_transferred_source_warm_starts_with_better_than_random_cells(space: CellSpace, source_file: Path) -> None:
    enc = ChoiceOneHot(space)
    src = onnx_source(source_file, enc)
    assert src.name == "src.onnx:source.score"
    with pytest.raises(PredictorError, match="no output 'nope'"):
        onnx_source(source_file, enc, "nope")
    warm = PredictorStrategy(space, ["maximize"], seed=0, n_init=4, source=src, source_pool=200, featurizer=enc)
    cold = PredictorStrategy(space, ["maximize"], seed=0, n_init=4, featurizer=enc)
    first_warm = [warm.ask() for _ in range(4)]
    first_cold = [cold.ask() for _ in range(4)]
    for x in first_warm:
        warm.tell(x, (quality(space, x),))
    assert len({space.encode(x) for x in first_warm}) == 4
    mean_q = np.mean([quality(space, space.sample(np.random.default_rng(i))) for i in range(300)])
    assert min(quality(space, x) for x in first_warm) > mean_q + 1.5
    assert np.mean([quality(space, x) for x in first_warm]) > np.mean([quality(space, x) for x in first_cold]) + 1.0
    for _ in range(3):  # after the warm start: refits on its own results, the source as prior mean
        x = warm.ask()
        assert space.encode(x) not in {space.encode(d) for d in first_warm}
        warm.tell(x, (quality(space, x),))
    assert np.mean([quality(space, x) for x in warm._designs[4:]]) > mean_q + 1.0


def test_a_source_scores_one_objective_only(space: CellSpace, source_file: Path) -> None:
    src = onnx_source(source_file, ChoiceOneHot(space))
    with pytest.raises(ValueError, match="one objective"):
        PredictorStrategy(space, ["maximize", "minimize"], source=src, featurizer=ChoiceOneHot(space))


def test_optimistic_reachable_declines_only_dominated_points() -> None:
    observed = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    mean = np.array([[0.2, 0.2], [0.2, 0.2], [1.2, -1.0], [0.4, 0.4]])
    std = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.1, 0.1]])
    assert optimistic_reachable(mean, std, observed, kappa=0.5).tolist() == [False, True, True, False]
    assert optimistic_reachable(mean, std, observed, kappa=1.5).tolist() == [False, True, True, True]


def test_skip_dominated_declines_candidates_and_counts_them(space: CellSpace) -> None:
    enc = ChoiceOneHot(space)

    def objectives(x: object) -> tuple[float, float]:
        ch = space.choices(x)
        return quality(space, x), float(sum(o.startswith("nor_conv") for o in ch.values()))

    runs = {}
    for skip in (False, True):
        strat = PredictorStrategy(space, ["maximize", "minimize"], seed=3, n_init=12, candidates=60, steps=40,
                                  featurizer=enc, skip_dominated=skip, kappa=0.0)
        for _ in range(16):
            x = strat.ask()
            strat.tell(x, objectives(x))
        runs[skip] = strat
    assert runs[False].skipped == 0
    assert runs[True].skipped > 0
    assert len({space.encode(d) for d in runs[True]._designs}) == 16


def test_predictor_skip_reaches_the_real_search(space: CellSpace) -> None:
    from nasmtl.search.samplers import make_proposer, make_sampler

    prop = make_proposer("predictor", space, ["maximize", "minimize"], seed=0, population=3, predictor_skip=True)
    assert prop.strategy.skip_dominated
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("predictor", 0))
    for _ in range(5):
        trial = study.ask()
        x = prop.propose(trial)
        assert trial.user_attrs["predictor_skipped"] == prop.strategy.skipped
        prop.observe(x, [quality(space, x), float(len(space.encode(x)))])
    table = {"data": {"name": "multimnist"}, "space": {"cell": "nb201"}, "train": {"epochs": 1},
             "objectives": [{"name": "out.accuracy", "direction": "maximize"}],
             "search": {"sampler": "evolution", "predictor_skip": True}}
    with pytest.raises(ConfigError, match="predictor_skip needs sampler"):
        parse_config(table)
    table["search"]["sampler"] = "predictor"
    assert parse_config(table).search.predictor_skip


def test_shipped_transfer_source_never_saw_cifar10() -> None:
    pred = load_predictor(NB201_IMAGENET16)
    assert pred.outputs == ["imagenet.val_acc"]
    assert pred.card["training_data"]["train_cells"] == 1000
    assert not any("cifar10" in o for o in pred.outputs)


def test_shipped_source_refuses_other_spaces() -> None:
    from nasmtl.predict.source import nb201_imagenet16_source

    with pytest.raises(PredictorError, match="NAS-Bench-201 cells only"):
        nb201_imagenet16_source(CellSpace.from_file("darts"))
