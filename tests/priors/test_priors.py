"""Transferred design priors: the bank (runs, storages, tables, files), task embeddings, priors, warm starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nasmtl.config import ConfigError, parse_config
from nasmtl.priors.bank import (SHARED_BENCHMARKS, Bank, BankError, Record, records_from_graphgym,
                                records_from_storage, records_from_transnas)
from nasmtl.priors.embedding import (anchor_embedding, bank_embeddings, choose_anchors, probe_embedding,
                                     rank_correlation, scores_by_task, similarity)
from nasmtl.priors.transfer import transfer, with_priors
from tests.conftest import FakeEvaluator

shared = pytest.mark.skipif(not (SHARED_BENCHMARKS / "README.md").is_file(),
                            reason=f"shared benchmark folder {SHARED_BENCHMARKS} is missing")

CONFIG = {
    "data": {"name": "multimnist", "n_train": 100, "n_val": 50, "n_test": 50},
    "tasks": ["left"],
    "space": {"cell": "search_spaces/nb201.toml"},
    "objectives": [{"name": "left.accuracy", "direction": "maximize", "ref": 0.0},
                   {"name": "macs", "direction": "minimize", "ref": 1001.0}],
    "train": {"epochs": 1},
    "search": {"sampler": "evolution", "trials": 8, "population": 4, "fidelity": {"enabled": False}},
}
"""A run of the torch-free evaluator below: every trial trained in full (no successive-halving rungs)."""


def config(root: Path, **search: Any) -> Any:
    d = json.loads(json.dumps(CONFIG))
    d["search"].update(search)
    return parse_config(d, "<test>", str(root))


@pytest.fixture
def fake_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_engine`` with a torch-free evaluator (objectives from a hash of the design)."""
    import nasmtl.search.evaluate as ev

    monkeypatch.setattr(ev, "build_evaluator", lambda cfg, space, data=None: FakeEvaluator(space))


def run_search(root: Path, runs: Path, name: str, **search: Any) -> Any:
    from nasmtl.run.build import run_engine
    from nasmtl.run.lifecycle import start_run

    run = start_run(config(root, **search), name, runs_root=runs)
    run_engine(run, progress=None)
    return run


def cell_space(root: Path) -> Any:
    from nasmtl.spaces.cell import CellSpace

    return CellSpace.from_file(root / "search_spaces" / "nb201.toml")


# ---- bank -----------------------------------------------------------------------------------


def test_bank_reads_runs_written_by_search(root: Path, tmp_path: Path, fake_evaluator: None) -> None:
    run = run_search(root, tmp_path, "first")
    trials = [t for t in run.study.get_trials() if "duplicate_of" not in t.user_attrs]
    designs = {t.user_attrs["design"] for t in trials}
    # the search itself added its trials to the local bank next to the run directories
    bank = Bank.load(tmp_path / "bank.jsonl")
    assert {r.design for r in bank.records} == designs and len(bank.records) == 8
    assert bank.tasks() == ["multimnist:left"] and bank.spaces() == ["nb201"]
    best = bank.best("multimnist:left", 1)[0]
    front = {t.user_attrs["design"] for t in trials if t.number in
             [m.number for m in __import__("nasmtl.search.engine", fromlist=["x"]).pareto_trials(
                 run.study.get_trials(), ["maximize", "minimize"])]}
    assert best.design in front and all(r.score < 0 for r in bank.records if r.design not in front)
    assert best.choices == cell_space(root).choices(cell_space(root).decode(best.design))
    # the same records from the storage URL, and from trials/*.json when the storage is gone
    via_storage = records_from_storage(str(run.dir / "study.journal"))
    assert sorted(r.design for r in via_storage) == sorted(r.design for r in bank.records)
    (run.dir / "study.journal").unlink()
    fresh = Bank()
    assert fresh.update_from_run(run.dir) == 8
    assert sorted((r.design, r.score) for r in fresh.records) == sorted((r.design, r.score) for r in bank.records)
    # updating again replaces the run's records instead of duplicating them
    assert fresh.update_from_run(run.dir) == 8 and len(fresh.records) == 8


def test_bank_reads_an_sqlite_storage(root: Path, tmp_path: Path, fake_evaluator: None) -> None:
    from nasmtl.run.build import run_engine
    from nasmtl.run.lifecycle import start_run

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run = start_run(config(root, trials=4), "sq", url, runs_root=tmp_path / "runs")
    run_engine(run, progress=None)
    recs = records_from_storage(url)
    assert len(recs) == 4 and {r.task for r in recs} == {"multimnist:left"}
    assert {r.design for r in recs} == {r.design for r in Bank.load(tmp_path / "runs" / "bank.jsonl").records}
    with pytest.raises(BankError, match="no study 'other'"):
        records_from_storage(url, "other")


def test_bad_bank_file_names_file_and_line(tmp_path: Path) -> None:
    good = Record("t", "s", "d", {"a": "x"}, {"acc": 1.0}, 1.0, "test").to_json()
    p = tmp_path / "bank.jsonl"
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(BankError) as e:
        Bank.load(p)
    assert str(p) in str(e.value) and "line 2" in str(e.value) and "\n" not in str(e.value)
    bad = dict(good)
    del bad["choices"]
    p.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(BankError, match=r"line 3: record line lacks the key 'choices'"):
        Bank.load(p)
    p.write_text(json.dumps(dict(good, score="high")) + "\n")
    with pytest.raises(BankError, match="line 1: score must be a finite number"):
        Bank.load(p)


def test_bank_round_trip(tmp_path: Path) -> None:
    bank = Bank([Record("t", "s", "d", {"a": "x"}, {"acc": 0.5}, 0.5, "test")])
    bank.set_embedding("t", "probe", [1.0, 2.0])
    back = Bank.load(bank.save(tmp_path / "b.jsonl"))
    assert back.records == bank.records and back.embeddings == {"t": {"probe": [1.0, 2.0]}}


@shared
def test_shared_tables_read() -> None:
    tn = records_from_transnas()
    assert len({r.task for r in tn}) == 7 and len(tn) == 7 * 711
    assert all(len(r.design) == 6 and set(r.choices) == {f"edge_{i}" for i in range(6)} for r in tn[:50])
    gg = records_from_graphgym()
    assert len(gg) == 3323 and len({r.task for r in gg}) == 32
    assert all(0.0 <= r.score <= 1.0 for r in gg)


def test_missing_shared_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BankError, match="benchmark file not found"):
        from nasmtl.priors.bank import shared_file

        shared_file("transnas_bench101_micro_zc.json", tmp_path)


# ---- priors ---------------------------------------------------------------------------------


def synthetic_bank(root: Path, n_tasks: int = 3, n: int = 60) -> tuple[Any, dict[str, list[Record]]]:
    """Tasks whose best designs all use nor_conv_3x3 on edge 2; the rest is random."""
    space = cell_space(root)
    rng = np.random.default_rng(0)
    by: dict[str, list[Record]] = {}
    for t in range(n_tasks):
        recs = []
        for i in range(n):
            x = space.sample(rng)
            ch = space.choices(x)
            score = (1.0 if ch["edge_2"] == "nor_conv_3x3" else 0.0) + 0.1 * rng.random()
            recs.append(Record(f"task{t}", space.name, space.encode(x), ch, {"acc": score}, score, "synthetic"))
        by[f"task{t}"] = recs
    return space, by


def test_priors_weight_the_shared_choice_of_the_best_designs(root: Path) -> None:
    space, by = synthetic_bank(root)
    pr = transfer(by, {"task0": 0.9, "task1": 0.5, "task2": -0.2}, k=2, space=space)
    assert [t for t, _ in pr.sources] == ["task0", "task1"] and pr.sources[0][1] > pr.sources[1][1]
    w = pr.prior["edge_2"]
    assert max(w, key=w.get) == "nor_conv_3x3" and w["nor_conv_3x3"] > 0.8
    assert set(w) == set(space.ops) and min(w.values()) > 0  # the floor keeps every option possible
    good = {r.design for rs in by.values() for r in rs if r.choices["edge_2"] == "nor_conv_3x3"}
    assert len(pr.warm_start) == 5 and set(pr.warm_start) <= good
    rng = np.random.default_rng(1)
    draws = [space.choices(space.sample(rng, pr.prior))["edge_2"] for _ in range(300)]
    assert draws.count("nor_conv_3x3") / 300 > 0.6


def test_runner_strategies_start_from_warm_designs_and_prior(root: Path) -> None:
    from nasmtl.nasbench.runner import RandomStrategy, strategy_factory

    space, by = synthetic_bank(root)
    pr = transfer(by, None, space=space, n_warm=3)
    for name in ("random", "evolution", "tpe"):
        strat = with_priors(strategy_factory(name), pr.prior, pr.warm_start)(space, ["maximize"], 0)
        asked = []
        for _ in range(10):
            x = strat.ask()
            asked.append(space.encode(x))
            strat.tell(x, (0.5,))
        assert asked[:3] == pr.warm_start, name
        assert len(set(asked)) == len(asked)
    rs = RandomStrategy(space, ["maximize"], 0, prior=pr.prior)
    picks = [space.choices(rs.ask())["edge_2"] for _ in range(100)]
    assert picks.count("nor_conv_3x3") > 50


@pytest.mark.parametrize("sampler", ["evolution", "tpe", "random"])
def test_search_with_priors_enqueues_warm_starts_first(root: Path, tmp_path: Path, fake_evaluator: None,
                                                       sampler: str) -> None:
    from nasmtl.report import load_report

    run_search(root, tmp_path, "earlier", trials=10)
    run = run_search(root, tmp_path, "later", sampler=sampler, priors="auto", trials=8)
    stored = run.study.user_attrs["priors"]
    warm = stored["warm_start"]
    assert len(warm) == 5 and stored["sources"] == [["multimnist:left", 1.0]]
    firsts = [t.user_attrs["design"] for t in sorted(run.study.get_trials(), key=lambda t: t.number)][:len(warm)]
    assert firsts == warm
    earlier = Bank.load(tmp_path / "bank.jsonl").best("multimnist:left", 1)[0]
    assert warm[0] == earlier.design
    assert json.loads((run.dir / "priors.json").read_text())["warm_start"] == warm
    line = load_report(run.dir).priors_line()
    assert "multimnist:left (1.00)" in line and "5 warm-start design(s)" in line


def test_priors_config_values(root: Path) -> None:
    assert config(root).search.priors is False
    assert config(root, priors="auto").search.priors == "auto"
    assert config(root, priors="runs/bank.jsonl").search.priors == "runs/bank.jsonl"
    with pytest.raises(ConfigError, match="search.priors"):
        config(root, priors="")
    with pytest.raises(ConfigError, match="search.priors"):
        config(root, priors=3)


def test_missing_bank_path_is_a_config_error(root: Path, tmp_path: Path, fake_evaluator: None) -> None:
    with pytest.raises(ConfigError, match="no bank file 'nowhere.jsonl'"):
        run_search(root, tmp_path, "x", priors="nowhere.jsonl")


# ---- embeddings -----------------------------------------------------------------------------


def toy_data(kind: str, seed: int = 0) -> Any:
    from nasmtl.data.dataset import MultiTaskDataset, Split
    from nasmtl.data.tasks import Task

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((600, 1, 12, 12)).astype(np.float32)
    region = x[:, 0].reshape(600, 2, 6, 2, 6).mean(axis=(2, 4)).reshape(600, 4)
    if kind == "regression":
        task, y = Task("t", "regression", 1), rng.standard_normal(600).astype(np.float32)
    else:
        perm = rng.permutation(4) if kind == "permuted" else np.arange(4)
        task, y = Task("t", "classification", 4), perm[region.argmax(axis=1)]
    split = Split(x, {"t": y})
    return MultiTaskDataset("toy", (task,), split, split, split, (1, 12, 12))


def test_probe_embedding_is_deterministic_and_sane() -> None:
    a, b, c = (probe_embedding(toy_data(k)) for k in ("classification", "permuted", "regression"))
    assert np.array_equal(a, probe_embedding(toy_data("classification")))
    assert similarity(a, a) == pytest.approx(1.0)
    assert similarity(a, b) > similarity(a, c)


@shared
def test_anchor_embedding_tracks_true_task_correlation() -> None:
    scores = scores_by_task(records_from_transnas())
    anchors = choose_anchors(scores, 10)
    assert len(set(anchors)) == 10 and anchors == choose_anchors(scores, 10)
    emb = {t: anchor_embedding(s, anchors) for t, s in scores.items()}
    common = sorted(set.intersection(*(set(s) for s in scores.values())))
    tasks = list(scores)
    sims, true = [], []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            sims.append(similarity(emb[a], emb[b]))
            true.append(rank_correlation([scores[a][d] for d in common], [scores[b][d] for d in common]))
    assert rank_correlation(sims, true) > 0.2


@shared
def test_effect_embedding_on_graphgym_bank() -> None:
    emb = bank_embeddings(records_from_graphgym(), "effect")
    assert len(emb) == 32 and len({len(v) for v in emb.values()}) == 1
    assert similarity(emb["graphgym/Cora/node"], emb["graphgym/CiteSeer/node"]) > \
        similarity(emb["graphgym/Cora/node"], emb["graphgym/TU_IMDB/graph"])


def test_grammar_priors_are_production_probabilities(root: Path) -> None:
    from nasmtl.spaces.grammar import GrammarSpace

    space = GrammarSpace.from_file(root / "grammars" / "cnn.lark", (1, 36, 36))
    rng = np.random.default_rng(0)
    recs = []
    for _ in range(50):
        x = space.sample(rng)
        ch = space.choices(x)
        kernels = [v for k, v in ch.items() if k.startswith("ksize@")]
        score = kernels.count("5") / max(1, len(kernels)) + 0.01 * rng.random()
        recs.append(Record("g", space.name, space.encode(x), ch, {"acc": score}, score, "synthetic"))
    pr = transfer({"g": recs}, None, space=space, top_fraction=0.1)
    assert set(pr.prior["ksize"]) == {"1", "3", "5"} and max(pr.prior["ksize"], key=pr.prior["ksize"].get) == "5"

    def share_of_5(prior: Any) -> float:
        r = np.random.default_rng(3)
        ks = [v for _ in range(200) for k, v in space.choices(space.sample(r, prior)).items() if k.startswith("ksize@")]
        return ks.count("5") / len(ks)

    # The prior multiplies the file's weights (1, 3, 1): the expected share of "5" follows from both.
    file_w = dict(zip(space.analysis.labels("ksize"), space.analysis.weights("ksize")))
    mixed = {k: w * pr.prior["ksize"][k] for k, w in file_w.items()}
    expected = mixed["5"] / sum(mixed.values())
    with_prior, without = share_of_5({"ksize": pr.prior["ksize"]}), share_of_5(None)
    assert abs(with_prior - expected) < 0.07 and with_prior > without + 0.1, (with_prior, expected, without)
