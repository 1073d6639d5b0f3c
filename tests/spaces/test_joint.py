"""Joint designs (architecture × layout × quantization): strings, operators, stage fitting, export, Δm, search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasmtl.arch import arch_cost, to_torch
from nasmtl.arch.compose import task_costs
from nasmtl.arch.ir import Arch, ArchBuilder
from nasmtl.config import ConfigError, parse_config
from nasmtl.data.delta_m import delta_m
from nasmtl.spaces.base import SpaceError, design_options
from nasmtl.spaces.joint import Design, FixedArchSpace, JointSpace, joint_from_parts
from nasmtl.spaces.layout import LayoutSpace
from nasmtl.spaces.quant import QuantPolicy, QuantSpace

SHAPE = (1, 36, 36)
HEADS = {"left": 10, "right": 10}
TINY_DATA = {"name": "multimnist", "n_train": 256, "n_val": 96, "n_test": 32}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def conv_stages(shape: tuple[int, ...], n: int = 3, width: int = 4) -> list[Arch]:
    """``n`` small conv stages (the second one downsamples)."""
    out = []
    for k in range(n):
        b = ArchBuilder(shape)
        layers = [("conv", {"out": width * (k + 1), "k": 3}), ("relu", {})]
        if k == 1:
            layers.append(("maxpool", {"k": 2, "stride": 2}))
        b.output("out", b.chain(b.input, layers))
        st = b.build()
        out.append(st)
        shape = st.shape(st.outputs["out"])
    return out


def grammar_joint(root: Path, n_stages: int = 3) -> JointSpace:
    from nasmtl.spaces.grammar import GrammarSpace

    g = GrammarSpace.from_file(root / "grammars" / "cnn.lark", SHAPE)
    return joint_from_parts(g, list(HEADS), n_stages, QuantSpace(n_stages))


def test_round_trip_operators_and_choices(root: Path) -> None:
    space = grammar_joint(root)
    rng = np.random.default_rng(0)
    x = space.sample(rng)
    changed = {"arch": 0, "layout": 0, "quant": 0}
    for _ in range(40):
        y = space.mutate(x, rng)
        z = space.crossover(x, y, rng)
        for d in (y, z):
            s = space.encode(d)
            assert s.startswith("arch=") and ";layout=" in s and ";quant=" in s
            assert space.encode(space.decode(s)) == s
        for p in changed:
            changed[p] += getattr(y, p) != getattr(x, p)
        x = y
    assert all(v > 0 for v in changed.values())
    ch = space.choices(x)
    assert {"layout:layout.s0", "quant:quant.g0"} <= set(ch) and any(k.startswith("arch:") for k in ch)
    opts = design_options(space, x)                  # every decision with its options (trial params)
    assert set(opts) == set(ch) and all(ch[k] in opts[k] for k in ch)
    assert space.size() == float("inf")
    for bad in ("layout=a", "arch=seq(x);layout=left+right/left+right/left+right;quant=fp32,fp32,fp32",
                space.encode(x).replace(";quant=", ";q=")):
        with pytest.raises(SpaceError):
            space.decode(bad)


def test_fixed_parts_are_held_and_checked() -> None:
    arch = FixedArchSpace("cnn", lambda shape: conv_stages(shape))
    layouts = LayoutSpace(list(HEADS), 3)
    space = JointSpace(arch, layouts, QuantSpace(3, ("fp32", "int8_static")),
                       fixed={"quant": "int8_static,int8_static,int8_static"})
    assert space.searched == ("arch", "layout") and space.size() == 4.0
    assert hasattr(space, "sample_with")
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(30):
        d = space.mutate(space.sample(rng), rng)
        assert d.quant == QuantPolicy(("int8_static",) * 3)
        seen.add(space.encode(d))
    assert len(seen) == 4
    d = space.sample_with(lambda key, options, weights: max(options, key=lambda o: o.count("|")))
    assert d.layout == layouts.separate()
    with pytest.raises(SpaceError, match="fixed"):
        space.decode("arch=cnn;layout=left+right/left+right/left+right;quant=fp32,fp32,fp32")
    with pytest.raises(SpaceError, match="cannot fix"):
        JointSpace(arch, layouts, None, fixed={"quant": "fp32"})


def test_stage_fitting_rule() -> None:
    arch = FixedArchSpace("cnn3", lambda shape: conv_stages(shape, 3))
    total = sum(arch_cost(s).params for s in conv_stages(SHAPE, 3))
    two = JointSpace(arch, LayoutSpace(list(HEADS), 2))
    st = two.stages(Design("cnn3", two.layout_space.shared()), SHAPE)
    assert len(st) == 2 and sum(arch_cost(s).params for s in st) == total
    # stages 0 -> 0, 1 -> 0, 2 -> 1: a branch at layout stage 1 copies only the last backbone stage
    net = two.build(Design("cnn3", two.layout_space.decode("left+right/left|right")), SHAPE, HEADS)
    last = arch_cost(conv_stages(SHAPE, 3)[2]).params
    shared = two.build(Design("cnn3", two.layout_space.shared()), SHAPE, HEADS)
    assert arch_cost(net).params == arch_cost(shared).params + last
    four = JointSpace(arch, LayoutSpace(list(HEADS), 4))
    # 3 backbone stages on 4 layout stages: stage k takes layout stage (k+1)*4//3 - 1 = 0, 1, 3
    d = Design("cnn3", four.layout_space.decode("left+right/left+right/left+right/left|right"))
    assert four.layout_for(d, 3) == [[["left", "right"]], [["left", "right"]], [["left"], ["right"]]]
    assert arch_cost(four.build(d, SHAPE, HEADS)).params == arch_cost(net).params


def test_branched_network_exports_one_output_per_task_with_parity(tmp_path: Path) -> None:
    from nasmtl.onnx import check_parity, export_onnx, graph_stats, run_onnx
    from nasmtl.onnx.task_costs import onnx_task_costs

    tasks = ["left", "right", "sum"]
    heads = {"left": 10, "right": 10, "sum": 1}
    space = JointSpace(FixedArchSpace("cnn3", lambda s: conv_stages(s, 3)), LayoutSpace(tasks, 3))
    d = Design("cnn3", space.layout_space.decode("left+right+sum/left+right|sum/left|right|sum"))
    arch = space.build(d, SHAPE, heads)
    model = to_torch(arch, seed=0).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, SHAPE, path, tasks)
    x = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    assert check_parity(model, path, x, atol=1e-4).ok
    out = run_onnx(path, x)
    assert list(out) == tasks and out["sum"].shape == (8, 1) and out["left"].shape == (8, 10)
    costs = onnx_task_costs(path, tasks)
    ir = task_costs(arch)
    whole = graph_stats(path)
    for t in tasks:
        assert costs[t]["params"] == ir[t].params
        assert costs[t]["bytes"] < whole.bytes
    assert costs["sum"]["params"] < costs["left"]["params"]  # 'sum' has a 1-output head
    assert sum(c["params"] for c in costs.values()) > whole.params  # shared stages counted per task


def test_delta_m() -> None:
    ref = {"a.accuracy": 0.8, "b.mse": 2.0}
    assert delta_m(ref, ref) == 0.0
    assert delta_m({"a.accuracy": 0.88, "b.mse": 2.0}, ref) == pytest.approx(5.0)
    assert delta_m({"a.accuracy": 0.8, "b.mse": 1.0}, ref) == pytest.approx(25.0)  # lower mse is better
    assert delta_m({"a.accuracy": 0.72, "b.mse": 2.0}, ref, {"a.accuracy": "minimize"}) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="missing"):
        delta_m({"a.accuracy": 0.8}, ref)


def _cfg(space: dict, objectives: list[dict], trials: int = 3) -> object:
    return parse_config({"data": TINY_DATA, "space": space, "objectives": objectives,
                         "train": {"epochs": 1, "batch_size": 32},
                         "search": {"sampler": "random", "trials": trials, "latency_runs": 3, "seed": 1}},
                        "<test>", str(Path(__file__).resolve().parents[2]))


ARCH = "seq(seq(conv(out=16,k=3),batchnorm,relu),seq(seq(conv(out=32,k=3),batchnorm,relu),maxpool(k=2,stride=2)),seq(seq(conv(out=32,k=3),batchnorm,relu),maxpool(k=2,stride=2)))"


def test_config_keys_and_errors() -> None:
    from nasmtl.search.evaluate import load_space

    acc = [{"name": "left.accuracy"}]
    space = load_space(_cfg({"grammar": "grammars/cnn.lark", "arch": ARCH, "layout": "search"}, acc))
    assert isinstance(space, JointSpace) and space.n_stages == 3 and space.size() == 4.0
    space = load_space(_cfg({"grammar": "grammars/cnn.lark", "layout": "separate", "quant": "int8_static"}, acc))
    assert space.searched == ("arch",) and space.fixed["quant"] == QuantPolicy(("int8_static",) * 3)
    assert not isinstance(load_space(_cfg({"grammar": "grammars/cnn.lark"}, acc)), JointSpace)
    for bad, where in (({"layout": "left/right"}, "space.layout"), ({"quant": "int3"}, "space.quant"),
                       ({"quant": 3}, "space.quant"), ({"stages": 0}, "space.stages"),
                       ({"arch": "seq(x)"}, "space.arch")):
        with pytest.raises(ConfigError, match=where):
            load_space(_cfg({"grammar": "grammars/cnn.lark", **bad}, acc))


def test_short_search_with_layout_and_quant_searched(tmp_path: Path) -> None:
    from nasmtl.report import load_report
    from nasmtl.run.build import run_engine
    from nasmtl.run.lifecycle import start_run

    objectives = [{"name": "left.accuracy"}, {"name": "bytes", "direction": "minimize", "ref": 1e6},
                  {"name": "right.macs", "direction": "minimize", "ref": 1e8}]
    cfg = _cfg({"grammar": "grammars/cnn.lark", "arch": ARCH, "layout": "search",
                "quant": "search_spaces/quant.toml"}, objectives, trials=3)
    run = start_run(cfg, "joint", runs_root=tmp_path)
    summary = run_engine(run, progress=None)
    assert summary.completed == 3 and summary.failed == 0
    layouts = LayoutSpace(list(HEADS), 3)
    top = max(t.user_attrs["steps"] for t in run.study.get_trials())
    for t in run.study.get_trials():
        if "duplicate_of" in t.user_attrs:
            continue
        design = t.user_attrs["design"]
        layouts.decode(design.split(";layout=")[1].split(";quant=")[0])
        attrs = t.user_attrs
        for k in ("value:left.params", "value:right.macs", "value:bytes"):
            assert k in attrs, k
        # the same model in fp32 and all int8 is measured for trials trained to the top rung (report material)
        companions = ("value:fp32.left.accuracy", "value:int8.bytes")
        assert all(k in attrs for k in companions) == (attrs["steps"] == top), attrs["steps"]
        if attrs["steps"] == top:
            assert attrs["value:int8.bytes"] < attrs["value:fp32.bytes"]
        rec = json.loads((tmp_path / "joint" / "trials" / f"{t.number:05d}.json").read_text())
        assert rec["objectives"]["bytes"] == t.values[1]
        note = json.loads((tmp_path / "joint" / "trials" / f"{t.number:05d}.quant.json").read_text())
        assert note["policy"] == design.split(";quant=")[1]

    rep = load_report(tmp_path / "joint")
    assert rep.pareto and all(set(m.baselines) == {"fp32", "int8"} for m in rep.pareto)
    assert "bytes" in rep.pareto[0].baselines["int8"] and "all-int8" in rep.table()
    assert rep.to_json()["pareto"][0]["baselines"]["fp32"]["bytes"] > 0


def test_delta_m_objective_against_the_all_shared_layout(tmp_path: Path) -> None:
    from nasmtl.data.multimnist import multimnist
    from nasmtl.search.evaluate import ArchEvaluator
    from nasmtl.train import Budget, TrainConfig

    data = multimnist(n_train=128, n_val=64, n_test=16)
    space = JointSpace(FixedArchSpace("cnn2", lambda s: conv_stages(s, 2)), LayoutSpace(list(HEADS), 2))
    ev = ArchEvaluator(space, data, ["left.accuracy", "delta_m"], TrainConfig(budget=Budget(epochs=1), batch_size=32),
                       latency_runs=0)
    sep = ev.evaluate(Design("cnn2", space.layout_space.separate()), tmp_path / "a.onnx")
    ref = {k[4:]: v for k, v in sep.items() if k.startswith("ref.")}
    assert set(ref) == {"left.accuracy", "right.accuracy"}
    assert sep["delta_m"] == pytest.approx(delta_m(sep, ref))
    shared = ev.evaluate(Design("cnn2", space.layout_space.shared()), tmp_path / "b.onnx")
    assert shared["delta_m"] == 0.0  # the reference trained for the first design is the same network
    assert all(shared[k] == v for k, v in ref.items())
