"""Cell spaces from TOML: sampling, canonical strings (isomorphism), building, training, ONNX parity."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from nasmtl.arch import arch_cost, has_op, to_torch
from nasmtl.spaces.base import ArchitectureSpace, SearchSpace, SpaceError
from nasmtl.spaces.cell import SEARCH_SPACES, CellDesign, CellSpace

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
SHAPE = (3, 16, 16)
HEADS = {"a": 10, "b": 3}


@pytest.fixture(scope="module")
def nb201() -> CellSpace:
    return CellSpace.from_file(SEARCH_SPACES / "nb201.toml")


@pytest.fixture(scope="module")
def darts() -> CellSpace:
    return CellSpace.from_file(SEARCH_SPACES / "darts.toml")


def cell(space: CellSpace, ops: str) -> CellDesign:
    """An NB201 design from NAS-Bench-201 digits (0 none ... 4 avg_pool_3x3)."""
    return space.from_choices({f"edge_{i}": NB201_OPS[int(c)] for i, c in enumerate(ops)})


def test_protocols_and_keys(nb201, darts):
    for sp in (nb201, darts):
        assert isinstance(sp, SearchSpace) and isinstance(sp, ArchitectureSpace)
    assert nb201.decision_keys() == [f"edge_{i}" for i in range(6)]
    assert nb201.size() == 5 ** 6
    assert darts.decision_keys()[:3] == ["normal.node2.inputs", "normal.node2.op0", "normal.node2.op1"]
    assert len(darts.decision_keys()) == 24
    assert sorted(darts.ops) == sorted(["none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3",
                                        "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])


def test_nb201_string_and_edge_order(nb201):
    x = cell(nb201, "303101")
    assert nb201.encode(x) == "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    assert nb201.decode(nb201.encode(x)) == x
    assert nb201.choices(x)["edge_2"] == "nor_conv_3x3"  # edge 2 is 2<-1


def test_roundtrip_mutate_crossover(nb201, darts):
    rng = np.random.default_rng(0)
    for sp in (nb201, darts):
        for _ in range(30):
            x = sp.sample(rng)
            assert sp.from_choices(sp.choices(x)) == x
            y = sp.decode(sp.encode(x))
            assert sp.encode(y) == sp.encode(x)
            m = sp.mutate(x, rng)
            assert sp.encode(m) != sp.encode(x)
            diff = [k for k in sp.decision_keys() if sp.choices(m)[k] != sp.choices(x)[k]]
            assert 1 <= len(diff) <= 2
            z = sp.sample(rng)
            c = sp.crossover(x, z, rng)
            assert all(v in (sp.choices(x)[k], sp.choices(z)[k]) for k, v in sp.choices(c).items())


def test_prior_is_honoured(nb201, darts):
    rng = np.random.default_rng(1)
    prior = {"edge_0": {"nor_conv_3x3": 1.0}, "edge_5": {"skip_connect": 3.0, "none": 1.0}}
    xs = [nb201.choices(nb201.sample(rng, prior)) for _ in range(200)]
    assert all(c["edge_0"] == "nor_conv_3x3" for c in xs)
    assert {c["edge_5"] for c in xs} == {"skip_connect", "none"}
    assert sum(c["edge_5"] == "skip_connect" for c in xs) > 120
    assert len({c["edge_1"] for c in xs}) == 5
    # DARTS gives "none" weight 0 in its file: never sampled
    ds = [darts.choices(darts.sample(rng)) for _ in range(50)]
    assert all(v != "none" for c in ds for v in c.values())


def test_nb201_isomorphic_cells_share_one_string(nb201):
    enc = lambda s: nb201.encode(cell(nb201, s))  # noqa: E731
    # swapping nodes 1 and 2 (no edge 2<-1): 1=conv3(x), 2=skip(x), 3=pool(1)+conv1(2)
    assert enc("310042") == enc("130024")
    # an edge into a dead node (its only input is none) is pruned
    assert enc("030330") == enc("000330") != enc("330330")
    # a node that cannot reach the output is pruned: node 1 feeds nothing, so its op does not matter
    assert len({enc(f"{a}30003") for a in "01234"}) == 1
    # every cell whose output node gets only none (or dead nodes) is the all-none cell
    zeros = {enc("".join(d) + "000") for d in itertools.product("01234", repeat=3)}
    assert zeros == {enc("000000")}
    assert enc("000000") == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    # order matters when node 2 reads node 1: no swap
    assert enc("312001") != enc("132001")


def test_nb201_class_count_and_equal_costs(nb201):
    classes: dict[str, list[str]] = {}
    for d in itertools.product("01234", repeat=6):
        s = "".join(d)
        classes.setdefault(nb201.encode(cell(nb201, s)), []).append(s)
    assert len(classes) == 8765  # NAS-Bench-201's own count (6,466) also merges skip chains
    rng = np.random.default_rng(2)
    multi = [v for v in classes.values() if len(v) > 1 and "000000" not in v]
    for i in rng.choice(len(multi), 8, replace=False):
        costs = {(c.params, c.macs) for c in
                 (arch_cost(nb201.to_arch(cell(nb201, s), SHAPE, HEADS)) for s in multi[i][:3])}
        assert len(costs) == 1, multi[i]


def test_darts_isomorphism(darts):
    rng = np.random.default_rng(3)
    x = darts.sample(rng)
    ch = darts.choices(x)
    # the two inputs of a node listed the other way round
    normal = list(x.cells[0])
    normal[0], normal[1] = normal[1], normal[0]
    assert darts.encode(CellDesign((tuple(normal), x.cells[1]))) == darts.encode(x)
    # relabel intermediate nodes 2 and 3 of the normal cell (both read only inputs 0/1)
    a = {"normal.node2.inputs": "0,1", "normal.node2.op0": "sep_conv_3x3", "normal.node2.op1": "skip_connect",
         "normal.node3.inputs": "0,1", "normal.node3.op0": "max_pool_3x3", "normal.node3.op1": "dil_conv_3x3",
         "normal.node4.inputs": "2,3", "normal.node4.op0": "sep_conv_5x5", "normal.node4.op1": "avg_pool_3x3",
         "normal.node5.inputs": "1,4", "normal.node5.op0": "skip_connect", "normal.node5.op1": "sep_conv_3x3"}
    b = dict(a)
    b.update({"normal.node2.op0": "max_pool_3x3", "normal.node2.op1": "dil_conv_3x3",
              "normal.node3.op0": "sep_conv_3x3", "normal.node3.op1": "skip_connect",
              "normal.node4.op0": "avg_pool_3x3", "normal.node4.op1": "sep_conv_5x5"})
    ch_a, ch_b = dict(ch), dict(ch)
    ch_a.update(a)
    ch_b.update(b)
    xa, xb = darts.from_choices(ch_a), darts.from_choices(ch_b)
    assert xa != xb and darts.encode(xa) == darts.encode(xb)
    ca = arch_cost(darts.to_arch(xa, SHAPE, HEADS))
    cb = arch_cost(darts.to_arch(xb, SHAPE, HEADS))
    assert (ca.params, ca.macs) == (cb.params, cb.macs)
    # a different op is a different design
    ch_c = dict(ch_a)
    ch_c["normal.node5.op0"] = "max_pool_3x3"
    assert darts.encode(darts.from_choices(ch_c)) != darts.encode(xa)


def _train_step_and_export(space: CellSpace, x: CellDesign, tmp_path: Path, name: str) -> None:
    arch = space.to_arch(x, SHAPE, HEADS)
    model = to_torch(arch, seed=0)
    gen = torch.Generator().manual_seed(0)
    xb = torch.randn(8, *SHAPE, generator=gen)
    ya, yb = torch.randint(0, 10, (8,), generator=gen), torch.randint(0, 3, (8,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    out = model(xb)
    loss = torch.nn.functional.cross_entropy(out["a"], ya) + torch.nn.functional.cross_entropy(out["b"], yb)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    onnx_mod = pytest.importorskip("nasmtl.onnx", reason="nasmtl.onnx (export, parity) has not landed")
    path = tmp_path / f"{name}.onnx"
    onnx_mod.export_onnx(model, SHAPE, path, list(HEADS))
    res = onnx_mod.check_parity(model, path, np.random.default_rng(0).normal(size=(6, *SHAPE)), atol=1e-4)
    assert res.worst <= 1e-4


def test_nb201_builds_trains_exports(nb201, tmp_path):
    x = cell(nb201, "333132")
    stages = nb201.stages(x, SHAPE)
    assert [s.shape(s.outputs["out"]) for s in stages] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert all(list(s.outputs) == ["out"] for s in stages)
    _train_step_and_export(nb201, x, tmp_path, "nb201")


def test_nb201_all_none_cell_builds(nb201, tmp_path):
    x = cell(nb201, "000000")
    arch = nb201.to_arch(x, SHAPE, HEADS)
    assert any(arch.graph.nodes[n]["op"] == "zero" for n in arch.op_nodes())
    _train_step_and_export(nb201, x, tmp_path, "nb201_zero")


def test_darts_builds_trains_exports(darts, tmp_path):
    x = darts.sample(np.random.default_rng(4))
    stages = darts.stages(x, SHAPE)
    assert [s.shape(s.outputs["out"]) for s in stages] == [(32, 16, 16), (64, 8, 8), (128, 4, 4)]
    _train_step_and_export(darts, x, tmp_path, "darts")


def test_darts_none_node_builds(darts, tmp_path):
    ch = darts.choices(darts.sample(np.random.default_rng(5)))
    ch.update({"reduce.node3.op0": "none", "reduce.node3.op1": "none", "normal.node5.op0": "none"})
    x = darts.from_choices(ch)
    assert "none" in darts.encode(x)
    _train_step_and_export(darts, x, tmp_path, "darts_none")


def test_params_override(tmp_path):
    sp = CellSpace.from_file(SEARCH_SPACES / "nb201.toml", C=4, N=2)
    x = sp.sample(np.random.default_rng(0))
    st = sp.stages(x, SHAPE)
    assert st[-1].shape(st[-1].outputs["out"]) == (16, 4, 4)
    with pytest.raises(SpaceError, match="no parameter"):
        CellSpace.from_file(SEARCH_SPACES / "nb201.toml", width=3)


@pytest.mark.parametrize("text, where", [
    ("name = 'x'\n[params]\nC = 4\n", "ops"),
    ((SEARCH_SPACES / "nb201.toml").read_text().replace('op = "avgpool", k = 3', 'op = "avgpoool", k = 3'),
     "ops.avg_pool_3x3.layers"),
    ((SEARCH_SPACES / "nb201.toml").read_text().replace('topology = "all_edges"', 'topology = "ring"'),
     "cells.cell.topology"),
    ((SEARCH_SPACES / "nb201.toml").read_text().replace('["resblock", "cell*N"],', '["resblok", "cell*N"],'),
     "macro.stages"),
    ("[ops\n", "not valid TOML"),
])
def test_space_file_errors_name_file_and_key(tmp_path, text, where):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SpaceError) as e:
        CellSpace.from_file(p)
    assert str(p) in str(e.value) and where in str(e.value)


def test_bad_design_strings(nb201, darts):
    for s in ["|foo~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|none~0|+|none~0|", "garbage",
              "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"]:
        with pytest.raises(SpaceError):
            nb201.decode(s)
    with pytest.raises(SpaceError, match="lacks cell"):
        darts.decode("normal=|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|"
                      "+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|")
