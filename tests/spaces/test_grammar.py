"""Grammar spaces: sampling builds, strings round-trip, operators keep validity, baselines train and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasmtl.arch import arch_cost, to_torch
from nasmtl.spaces.base import ArchitectureSpace, SpaceError
from nasmtl.spaces.grammar import GrammarSpace

ROOT = Path(__file__).resolve().parents[2]
GRAMMARS = {name: ROOT / "grammars" / f"{name}.lark" for name in ("einspace", "cnn", "mlp")}
BASELINES = sorted(p for p in (ROOT / "grammars" / "baselines").glob("*.txt")
                   if "# grammar: ../einspace.lark" in p.read_text())
"""The baseline strings written in einspace.lark (each file names its grammar on a ``# grammar:`` line)."""
HEADS = {"left": 10, "right": 10}


@pytest.fixture(scope="module")
def spaces() -> dict[str, GrammarSpace]:
    return {name: GrammarSpace.from_file(path) for name, path in GRAMMARS.items()}


def test_protocol_and_reproducible(spaces: dict[str, GrammarSpace]) -> None:
    space = spaces["einspace"]
    assert isinstance(space, ArchitectureSpace)
    a = [space.encode(space.sample(np.random.default_rng(7))) for _ in range(1)]
    b = [space.encode(space.sample(np.random.default_rng(7))) for _ in range(1)]
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [space.encode(space.sample(r1)) for _ in range(30)] == [space.encode(space.sample(r2)) for _ in range(30)]
    assert a == b
    assert space.size() == float("inf")


def test_round_trip_1000(spaces: dict[str, GrammarSpace]) -> None:
    space = spaces["einspace"]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(1000):
        x = space.sample(rng)
        s = space.encode(x)
        assert space.parse(s) == x
        assert space.encode(space.parse(s)) == s
        seen.add(s)
    assert len(seen) > 500
    for name in ("cnn", "mlp"):
        for _ in range(100):
            x = spaces[name].sample(rng)
            assert spaces[name].decode(spaces[name].encode(x)) == x


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_thrown_away_under_one_percent(name: str) -> None:
    space = GrammarSpace.from_file(GRAMMARS[name])
    rng = np.random.default_rng(11)
    for _ in range(1000):
        x = space.sample(rng)
        assert space.fits_limits(x) if _ % 50 == 0 else True
    assert space.stats.designs == 1000
    assert space.stats.thrown_fraction < 0.01, space.stats


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_200_samples_build_run_and_export(name: str, tmp_path: Path) -> None:
    from nasmtl.onnx import check_parity, export_onnx

    cap = 2_000_000
    space = GrammarSpace.from_file(GRAMMARS[name], max_macs=cap)
    rng = np.random.default_rng(1)
    shape = space.input_shape
    x_in = np.random.default_rng(2).standard_normal((2, *shape)).astype(np.float32)
    for i in range(200):
        x = space.sample(rng)
        info = space.info(x)
        arch = space.to_arch(x, heads=HEADS)
        cost = arch_cost(arch)
        assert info.macs <= cap and cost.macs >= info.macs and cost.params >= info.params
        model = to_torch(arch, seed=i).eval()
        with torch.no_grad():
            out = model(torch.from_numpy(x_in))
        assert set(out) == set(HEADS) and all(torch.isfinite(v).all() for v in out.values())
        path = tmp_path / f"{i}.onnx"
        export_onnx(model, shape, path, list(HEADS))
        # 1e-4 absolute, plus 1e-6 of the largest output: products of branches reach logits in the
        # thousands, where float32 itself rounds by ~1e-4 (one draw: 2135, differing by 9.8e-4).
        res = check_parity(model, path, x_in, atol=1e-4, rtol=1e-6)
        assert res.ok, (space.encode(x), res)


def test_stages_chain_without_heads(spaces: dict[str, GrammarSpace]) -> None:
    space = spaces["cnn"]
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = space.sample(rng)
        stages = space.stages(x)
        assert len(stages) == 3
        shape = space.input_shape
        for st in stages:
            assert st.input_shape == shape and list(st.outputs) == ["out"]
            assert not any("head" in n for n in st.graph.nodes)
            shape = st.shape(st.outputs["out"])
        assert shape == space.info(x).out_shape


@pytest.mark.parametrize("name", ["einspace", "cnn"])
def test_mutation_and_crossover_keep_validity(name: str, spaces: dict[str, GrammarSpace]) -> None:
    space = spaces[name]
    rng = np.random.default_rng(9)
    pop = [space.sample(rng) for _ in range(20)]
    changed = 0
    for i in range(1000):
        a = pop[i % len(pop)]
        if i % 2:
            child = space.mutate(a, rng)
            assert space.info(child).out_shape == space.info(a).out_shape
        else:
            child = space.crossover(a, pop[(i * 7 + 3) % len(pop)], rng)
        assert space.fits_limits(child)
        assert space.decode(space.encode(child)) == child
        changed += child != a
        pop[i % len(pop)] = child
    assert changed > 500
    for x in pop:
        space.to_arch(x, heads=HEADS)


def test_mutation_keeps_subtree_contract(spaces: dict[str, GrammarSpace], monkeypatch: pytest.MonkeyPatch) -> None:
    import nasmtl.spaces.grammar as grammar_module

    replaced: list[str] = []
    original = grammar_module._replace_at

    def spy(x, path, new):  # type: ignore[no-untyped-def]
        replaced.append(path)
        return original(x, path, new)

    monkeypatch.setattr(grammar_module, "_replace_at", spy)
    space = spaces["einspace"]
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(100):
        x = space.sample(rng)
        replaced.clear()
        y = space.mutate(x, rng)
        if y == x:
            continue
        top = replaced[-1]
        sx, sy = space.spans(x), space.spans(y)
        assert sy[top].rule == sx[top].rule
        assert (sy[top].in_shape, sy[top].out_shape) == (sx[top].in_shape, sx[top].out_shape)
        outside = [p for p in sx if not (p == top or p.startswith(top + "."))]
        assert all(sx[p].in_shape == sy[p].in_shape and sx[p].out_shape == sy[p].out_shape for p in outside)
        checked += 1
    assert checked > 80


def test_choices_and_priors(spaces: dict[str, GrammarSpace]) -> None:
    space = spaces["mlp"]
    rng = np.random.default_rng(0)
    x = space.sample(rng)
    ch = space.choices(x)
    assert ch and all("@" in k for k in ch)
    assert all(v in [a.label for a in space.grammar.rules[k.split("@")[0]].alts] for k, v in ch.items())
    only_layers = {"block": {"layer": 1.0}, "width": {"128": 1.0}}
    for _ in range(30):
        d = space.sample(rng, prior=only_layers)
        assert set(v for k, v in space.choices(d).items() if k.startswith("block@")) == {"layer"}
        assert all(v == "128" for k, v in space.choices(d).items() if k.startswith("width@"))
    path_prior = {"block@0.0": {"seq": 1.0}}
    assert all(space.choices(space.sample(rng, prior=path_prior))["block@0.0"] == "seq" for _ in range(20))
    tuned = space.with_probabilities({"layer": {"linear": 0.0, "relu": 0.0, "gelu": 0.0, "layernorm": 0.0,
                                                 "batchnorm": 0.0, "dropout": 0.0}})
    for _ in range(20):
        d = tuned.sample(rng)
        assert set(v for k, v in tuned.choices(d).items() if k.startswith("layer@")) <= {"identity"}
    with pytest.raises(SpaceError, match="has no alternative 'conv'"):
        space.with_probabilities({"layer": {"conv": 1.0}})


def test_limits_are_kept(spaces: dict[str, GrammarSpace]) -> None:
    space = GrammarSpace.from_file(GRAMMARS["einspace"], max_nodes=12, max_params=20_000, max_macs=500_000,
                                   max_depth=5)
    rng = np.random.default_rng(8)
    for _ in range(200):
        x = space.sample(rng)
        info = space.info(x)
        assert info.nodes <= 12 and info.params <= 20_000 and info.macs <= 500_000
        assert space.fits_limits(x)


def test_decode_refuses_non_designs(spaces: dict[str, GrammarSpace]) -> None:
    space = spaces["einspace"]
    with pytest.raises(SpaceError, match="not a design"):
        space.decode("seq(relu)")
    with pytest.raises(SpaceError, match="does not build"):
        space.decode("seq(route(im2col(k=9),identity,col2im),route(im2col(k=9),identity,col2im))")


@pytest.mark.parametrize("path", BASELINES, ids=[p.stem for p in BASELINES])
def test_baselines_build_train_and_export(path: Path, spaces: dict[str, GrammarSpace], tmp_path: Path) -> None:
    from nasmtl.arch.lower import lower_patch_convs
    from nasmtl.data import multimnist
    from nasmtl.onnx import check_parity, export_onnx
    from nasmtl.train import Budget, TrainConfig, train

    from nasmtl.search.start import read_entry

    space = spaces["einspace"]
    x = space.decode(read_entry(str(path), Path))
    assert space.decode(space.encode(x)) == x
    data = multimnist(seed=0, n_train=256, n_val=64, n_test=64)
    heads = {t.name: t.n_outputs for t in data.tasks}
    arch = lower_patch_convs(space.to_arch(x, data.input_shape, heads))
    model = to_torch(arch, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    result = train(model, data, TrainConfig(budget=Budget(steps=3), batch_size=32))
    assert result is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    export_onnx(model, data.input_shape, tmp_path / "m.onnx", list(heads))
    assert check_parity(model, tmp_path / "m.onnx", data.test.x[:8], atol=1e-4).ok


def test_baselines_present() -> None:
    assert {p.stem for p in BASELINES} >= {"resnet", "vit", "mixer"}


def test_cli_sample_json(capsys: pytest.CaptureFixture[str]) -> None:
    from nasmtl.cli import main

    assert main(["sample", str(GRAMMARS["einspace"]), "-n", "3", "--seed", "2", "--json",
                 "--input-shape", "1,36,36", "--max-macs", "1000000"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        row = json.loads(line)
        assert {"design", "params", "macs", "depth"} <= set(row) and row["macs"] <= 1_000_000
    assert main(["sample", str(GRAMMARS["mlp"]), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "thrown away" in out
