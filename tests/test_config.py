"""Run configs: the default and the example parse; unknown keys, wrong types and bad values are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasmtl.cli import main
from nasmtl.config import ConfigError, RunConfig, default_config, load_config, parse_config

GOOD = """
[data]
name = "multimnist"
n_train = 100

[space]
cell = "search_spaces/nb201.toml"

[[objectives]]
name = "left.accuracy"
direction = "maximize"

[[objectives]]
name = "params"
direction = "minimize"
bound = 50000

[train]
epochs = 1

[search]
sampler = "tpe"
trials = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_default_and_example_configs(root: Path) -> None:
    d = default_config()
    assert d.space.grammar == "grammars/convnet.lark" and d.resolve(d.space.grammar).is_file()
    assert d.data["name"] == "multimnist" and len(d.objectives) >= 2
    assert d.search.multi_fidelity and d.final.steps and d.final.members >= 1 and d.search.baselines == ["auto"]
    assert d.train.steps and d.train.seconds is None     # budgets in steps: machine load changes time, not results
    ex = load_config(root / "search_spaces" / "example_run.toml")
    assert ex.search.early_stopping.enabled and not ex.search.multi_fidelity and ex.objectives[0].bound == 0.2
    assert ex.resolve(ex.space.grammar).is_file()
    assert RunConfig.from_dict(ex.to_dict()) == ex


@pytest.mark.parametrize("which", ["default", "example"])
def test_shipped_configs_build_their_space_evaluator_and_start_designs(root: Path, which: str) -> None:
    from nasmtl.search.evaluate import build_evaluator, load_space
    from nasmtl.search.start import start_designs

    cfg = default_config() if which == "default" else load_config(root / "search_spaces" / "example_run.toml")
    space = load_space(cfg)
    evaluator = build_evaluator(cfg, space)
    assert [t.name for t in evaluator.data.tasks] == ["left", "right"]
    designs = start_designs(space, cfg.search.start, cfg.resolve, source=cfg.source)
    assert len(designs) == 2 * len(cfg.search.start) >= 2    # an architecture starts at both ends of the layouts
    assert all(space.encode(space.decode(d)) == d for d in designs)
    starts = [space.decode(d) for d in designs[:2]]
    ls = space.layout_space
    assert [x.layout for x in starts] == [ls.shared(), ls.separate()]
    assert starts[0].arch == starts[1].arch and starts[0].quant == starts[1].quant
    arch = evaluator._arch(space.decode(designs[0]))
    ops = [arch.graph.nodes[n]["op"] for n in arch.op_nodes()]
    assert "conv" in ops and "im2col" not in ops  # patch convolutions (the ResNet's) reach ONNX as Conv


def test_good_config_and_reference_point(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.directions == ["maximize", "minimize"]
    assert cfg.reference_point() == [0.0, 50000.0]
    assert cfg.objectives[1].feasible(40000) and not cfg.objectives[1].feasible(60000)
    assert cfg.train.epochs == 1.0 and isinstance(cfg.train.epochs, float)


@pytest.mark.parametrize("old,new,message", [
    ("[train]\nepochs = 1", "[train]\nepochs = 1\nepocs = 2", "unknown key 'train.epocs'"),
    ('sampler = "tpe"', 'sampler = "tpe"\ncolour = 1', "unknown key 'search.colour'"),
    ("trials = 3", 'trials = "three"', "search.trials must be an integer"),
    ("epochs = 1", "epochs = true", "train.epochs must be a number"),
    ('direction = "maximize"', 'direction = "up"', "objectives[0].direction must be"),
    ('sampler = "tpe"', 'sampler = "cmaes"', "search.sampler 'cmaes' is unknown"),
    ("bound = 50000", "", "objectives[1] (params, minimised) needs 'ref' or 'bound'"),
    ('cell = "search_spaces/nb201.toml"', "", "[space] needs exactly one of"),
    ('name = "left.accuracy"', 'name = "accuracy"', "neither 'task.metric'"),
    ("trials = 3", "trials = 0", "search.trials must be > 0"),
    ("[search]", "[search.early_stopping]\nfraction = 2.0\n[search]", "fraction must be in (0, 1]"),
])
def test_bad_configs_name_key_and_file(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[data\nname="))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_cli_reports_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("[train]", "[train]\nbatchsize = 3"))
    assert main(["search", str(path), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key 'train.batchsize'" in err and str(path) in err


def test_unknown_task_and_metric_are_config_errors(tmp_path: Path) -> None:
    from nasmtl.search.evaluate import build_evaluator

    cfg = load_config(write(tmp_path, GOOD.replace("left.accuracy", "middle.accuracy")))
    with pytest.raises(ConfigError, match="no task 'middle'"):
        build_evaluator(cfg, None)
    cfg = load_config(write(tmp_path, GOOD.replace("left.accuracy", "left.bleu")))
    with pytest.raises(ConfigError, match="no metric 'bleu'"):
        build_evaluator(cfg, None)


def test_default_config_builds_its_grammar_space(root: Path) -> None:
    if not (root / "grammars" / "einspace.lark").is_file():
        pytest.skip("grammars/einspace.lark is not in this checkout")
    import numpy as np

    from nasmtl.search.evaluate import load_space

    cfg = default_config()
    space = load_space(cfg)
    x = space.sample(np.random.default_rng(0))
    assert space.encode(space.decode(space.encode(x))) == space.encode(x)


def test_lr_schedule_keys_and_the_final_budget_they_give() -> None:
    import tomllib

    from nasmtl.config import DEFAULT_TOML
    from nasmtl.search.final import final_budget

    raw = tomllib.loads(DEFAULT_TOML)
    assert final_budget(parse_config(raw, "<t>", ".")).lr_schedule == "constant"
    raw["final"]["lr_schedule"] = "cosine"
    b = final_budget(parse_config(raw, "<t>", "."))
    assert b.tag.endswith("-cosine") and "(cosine)" in b.describe()
    assert final_budget(parse_config(raw, "<t>", "."), lr_schedule="constant").tag == "steps600-bs128-lr0.001"
    raw["final"]["lr_schedule"] = "cos"
    with pytest.raises(ConfigError, match="final.lr_schedule must be one of"):
        parse_config(raw, "<t>", ".")
    del raw["final"]["lr_schedule"]
    raw["train"] = {"seconds": 10, "lr_schedule": "cosine"}
    raw["final"]["steps"] = 10
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        parse_config(raw, "<t>", ".")
