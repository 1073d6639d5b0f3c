"""Multi-fidelity search, final training of found designs and baselines, devices, and the retrain command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nasmtl.cli import main
from nasmtl.config import ConfigError, Objective, parse_config
from nasmtl.search.fidelity import Schedule, SuccessiveHalving, rank_position
from nasmtl.search.final import compare, select_finalists

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

OBJ = [Objective("left.accuracy", "maximize", bound=0.12, ref=0.0), Objective("right.accuracy", "maximize", ref=0.0),
       Objective("bytes", "minimize", ref=4e6)]

RUN = """
[data]
name = "multimnist"
n_train = 300
n_val = 80
n_test = 120

[space]
grammar = "{root}/grammars/convnet.lark"
head = "grid"
layout = "search"
quant = "{root}/search_spaces/quant.toml"

[[objectives]]
name = "left.accuracy"
direction = "maximize"
ref = 0.0

[[objectives]]
name = "right.accuracy"
direction = "maximize"
ref = 0.0

[[objectives]]
name = "bytes"
direction = "minimize"
ref = 4_000_000

[train]
steps = 9
batch_size = 32
device = "cpu"

[search]
trials = 6
population = 3
latency_runs = 3
start = ["{root}/grammars/baselines/two_branch_cnn.txt"]
baselines = {baselines}

[final]
steps = 12
members = 2
"""


def _cfg(root: Path, baselines: str = '["two-branch-cnn"]', **edits: str):
    text = RUN.format(root=root, baselines=baselines)
    for old, new in edits.items():
        text = text.replace(old, new)
    return parse_config(tomllib.loads(text), "run.toml", str(root))


def test_schedule_rungs_are_geometric_below_the_budget() -> None:
    assert Schedule.geometric(360, 3, 3).steps == (40, 120, 360)
    assert Schedule.geometric(10, 4, 3).steps == (1, 3, 10)
    assert Schedule.geometric(5, 1, 2).steps == (5,)
    with pytest.raises(ValueError):
        Schedule.geometric(0, 3, 3)


def test_promotion_by_pareto_rank_keeps_the_best_third() -> None:
    rule = SuccessiveHalving([o.name for o in OBJ], [o.direction for o in OBJ], eta=3, bounds=[o.bound for o in OBJ])
    first = {"left.accuracy": 0.3, "right.accuracy": 0.3, "bytes": 1e5}
    assert not rule.should_stop(0, first, [])
    others = [{"left.accuracy": 0.5 + i / 100, "right.accuracy": 0.5, "bytes": 1e5} for i in range(5)]
    assert rule.should_stop(0, first, others)                  # dominated by all five
    best = {"left.accuracy": 0.9, "right.accuracy": 0.9, "bytes": 1e4}
    assert not rule.should_stop(0, best, others)
    infeasible = {"left.accuracy": 0.05, "right.accuracy": 0.99, "bytes": 10.0}
    assert rule.should_stop(0, infeasible, others)             # misses the bound: ranked after every feasible one
    # a front member at an end of the front beats a dominated one: crowding orders within a front
    place = rank_position([first, *others], ["left.accuracy", "right.accuracy", "bytes"],
                          ["maximize", "maximize", "minimize"], [None, None, None])
    assert place[0] == 5 and sorted(place) == list(range(6))


def test_training_evaluates_at_the_rungs_and_stops_there() -> None:
    from nasmtl.arch import to_torch
    from nasmtl.data import multimnist
    from nasmtl.examples import shared_mlp
    from nasmtl.train import Budget, TrainConfig, train

    data = multimnist(n_train=200, n_val=40, n_test=40)
    seen: list[tuple[int, int]] = []
    model = to_torch(shared_mlp(data.input_shape, {"left": 10, "right": 10}, width=16), seed=0)
    r = train(model, data, TrainConfig(budget=Budget(steps=30), batch_size=16, eval_steps=(3, 9, 30)),
              on_epoch=lambda i, m: seen.append((i, len(m))) is None)
    assert [i for i, _ in seen] == [0, 1, 2] and [h["steps"] for h in r.history] == [3, 9, 30]
    model = to_torch(shared_mlp(data.input_shape, {"left": 10, "right": 10}, width=16), seed=0)
    r = train(model, data, TrainConfig(budget=Budget(steps=30), batch_size=16, eval_steps=(3, 9, 30)),
              on_epoch=lambda i, m: i < 1)
    assert r.steps == 9 and r.stopped_early


def test_device_names(root: Path) -> None:
    from nasmtl.search.evaluate import config_device
    from nasmtl.train import DeviceError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="train.device"):
        _cfg(root, **{'device = "cpu"': 'device = "gpu0"'})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"run.toml: train.device: device 'cuda': no CUDA device"):
            config_device(_cfg(root, **{'device = "cpu"': 'device = "cuda"'}))


def test_config_checks_fidelity_and_final(root: Path) -> None:
    with pytest.raises(ConfigError, match="final.members must be >= 0"):
        _cfg(root, **{"members = 2": "members = -1"})
    with pytest.raises(ConfigError, match="enable one of them"):
        _cfg(root, **{"[final]": "[search.fidelity]\nenabled = true\n[search.early_stopping]\nenabled = true\n[final]"})
    with pytest.raises(ConfigError, match="search.fidelity needs"):
        _cfg(root, **{"steps = 9": "seconds = 5", "steps = 12": "steps = 12"})
    cfg = _cfg(root, **{"[final]": "[search.early_stopping]\nenabled = true\n[final]"})
    assert not cfg.search.multi_fidelity                      # early stopping instead of the schedule


@dataclass
class _Member:
    number: int
    values: list[float]


def test_finalists_span_the_front_best_first() -> None:
    front = [_Member(1, [0.95, 0.93, 8e5]), _Member(2, [0.94, 0.92, 7e5]), _Member(3, [0.90, 0.88, 2e5]),
             _Member(4, [0.80, 0.70, 5e4]), _Member(5, [0.5, 0.4, 1e4])]
    chosen = select_finalists(front, OBJ, 3)
    assert [m.number for m in chosen] == [1, 4, 3]             # best, then the knees by hypervolume added
    assert [m.number for m in select_finalists(front, OBJ, 5)][:3] == [1, 4, 3]
    assert sorted(m.number for m in select_finalists(front, OBJ, 5)) == [1, 2, 3, 4, 5]
    assert select_finalists(front, OBJ, 0) == []


def test_finalists_take_a_knee_just_above_half_the_cost() -> None:
    # the front of the default search, seed 0: trial 22 shares every stage at 0.503x the bytes of
    # trial 16 and loses little; a rule of "at most half the cost" skipped it for the 9.7 kB trial 2
    front = [_Member(16, [0.935, 0.929, 292465]), _Member(13, [0.938, 0.89, 291000]),
             _Member(22, [0.934, 0.895, 147201]), _Member(17, [0.928, 0.912, 290800]),
             _Member(2, [0.843, 0.784, 9724]), _Member(8, [0.842, 0.785, 9503]), _Member(26, [0.832, 0.766, 9492])]
    assert [m.number for m in select_finalists(front, OBJ, 2)] == [16, 22]
    assert [m.number for m in select_finalists(front, OBJ, 3)] == [16, 22, 2]


def test_verdict_needs_every_task_and_no_more_cost() -> None:
    base = {"left.accuracy": 0.94, "right.accuracy": 0.90, "bytes": 1.5e6}
    win = compare({"left.accuracy": 0.95, "right.accuracy": 0.90, "bytes": 2e5}, base, OBJ, "trial 3", "cnn")
    assert win.beats and "bytes 0.13x" in win.text
    assert not compare({"left.accuracy": 0.96, "right.accuracy": 0.89, "bytes": 2e5}, base, OBJ, "t", "cnn").beats
    assert not compare({"left.accuracy": 0.96, "right.accuracy": 0.95, "bytes": 2e6}, base, OBJ, "t", "cnn").beats


def test_baselines_auto_builtin_and_grammar_files(root: Path) -> None:
    from nasmtl.arch import arch_cost
    from nasmtl.examples import two_branch_cnn
    from nasmtl.search.baselines import baseline_candidates
    from nasmtl.search.evaluate import build_evaluator, load_space

    cfg = _cfg(root)
    space = load_space(cfg)
    ev = build_evaluator(cfg, space)
    auto = baseline_candidates(["auto"], ev.data, space, ev.build, cfg.resolve, "grid")
    assert [c.name for c in auto] == ["two-branch-cnn", "resnet", "vit", "mixer"]
    # the hand CNN written in the convnet grammar, branched after the stem, is the built-in network
    hand = baseline_candidates([f"arch={_text(root / 'grammars/baselines/two_branch_cnn.txt')};"
                                "layout=left+right/left|right;quant=fp32,fp32"], ev.data, space, ev.build,
                               cfg.resolve, "grid")[0]
    assert arch_cost(hand.arch) == arch_cost(two_branch_cnn((1, 36, 36), {"left": 10, "right": 10}))
    with pytest.raises(ConfigError, match=r"search.baselines\[0\] \('nope.txt'\): no baseline design file"):
        baseline_candidates(["nope.txt"], ev.data, space, ev.build, cfg.resolve)
    with pytest.raises(ConfigError, match=r"search.baselines\[0\].*does not build"):
        baseline_candidates(["seq(conv(out=8,k=3),nonsense)"], ev.data, space, ev.build, cfg.resolve)


def _text(path: Path) -> str:
    return "".join(ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real search with the schedule on, its final phase (two finalists, the hand CNN) done."""
    from nasmtl.run.build import run_engine, run_final_phase
    from nasmtl.run.lifecycle import start_run

    root = Path(__file__).resolve().parents[2]
    runs = tmp_path_factory.mktemp("runs")
    run = start_run(_cfg(root), "fin", None, runs)
    summary = run_engine(run, progress=None)
    assert summary.completed >= 4
    run_final_phase(run, progress=None)
    return runs / "fin"


def test_search_runs_successive_halving_and_fronts_only_the_top_rung(finished_run: Path) -> None:
    from nasmtl.search.engine import pareto_trials
    from nasmtl.run.lifecycle import open_run

    run = open_run(finished_run)
    trials = [t for t in run.study.get_trials() if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    steps = {t.user_attrs["steps"] for t in trials}
    assert steps <= {1, 3, 9} and 9 in steps                   # rungs of the 9-step budget; the start reached the top
    assert all(any(k.startswith("rung:") for k in t.user_attrs) for t in trials)
    assert all(t.user_attrs["steps"] == 9 for t in pareto_trials(trials, run.config.directions))
    rec = json.loads((finished_run / "trials" / f"{trials[0].number:05d}.json").read_text())
    assert rec["steps"] == trials[0].user_attrs["steps"]


def test_final_records_are_real_test_measurements(finished_run: Path) -> None:
    from nasmtl.data import multimnist
    from nasmtl.onnx.policy import evaluate_onnx
    from nasmtl.search.final import load_final

    by_tag = load_final(finished_run)
    assert list(by_tag) == ["steps12-bs32-lr0.001"]
    recs = by_tag["steps12-bs32-lr0.001"]
    kinds = sorted(r.kind for r in recs)
    assert kinds.count("baseline") == 1 and 1 <= kinds.count("found") <= 2
    data = multimnist(n_train=300, n_val=80, n_test=120)
    for r in recs:
        assert r.steps == 12 and r.parity < 1e-3
        again = evaluate_onnx(finished_run / r.onnx, data, "test")
        assert again["left.accuracy"] == pytest.approx(r.test["left.accuracy"])
        assert r.test["bytes"] > 0 and {"fp32", "int8"} <= set(r.variants)
    hand = next(r for r in recs if r.kind == "baseline")
    assert hand.test["bytes"] > 4 * hand.variants["int8"]["bytes"] * 0.9


def test_report_shows_final_models_and_verdicts(finished_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "final training from scratch (12 steps, batch 32, lr 0.001), test split:" in out
    assert "two-branch-cnn int8" in out
    assert "beats two-branch-cnn" in out or "no found model beats two-branch-cnn" in out
    page = (finished_run / "report.html").read_text()
    assert "Final models (trained from scratch" in page and (finished_run / "report" / "final_models.png").is_file()
    pictures = sorted((finished_run / "report").glob("arch_*.svg"))
    assert pictures and page.count("data:image/svg+xml;base64,") == len(pictures)
    assert "<svg" in pictures[0].read_text()[:2000]
    assert main(["report", str(finished_run), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["final"]["verdicts"] and js["final"]["models"][0]["kind"] == "found"


def test_retrain_command_and_its_errors(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from nasmtl.run.lifecycle import open_run

    trial = open_run(finished_run).study.best_trials[0].number
    out = tmp_path / "m.onnx"
    assert main(["retrain", str(finished_run), "--trial", str(trial), "--steps", "5", "-o", str(out)]) == 0
    assert f"trial-{trial:05d}: test left.accuracy" in capsys.readouterr().out
    sess = ort.InferenceSession(str(out))
    assert [o.name for o in sess.get_outputs()] == ["left", "right"]
    assert (finished_run / "final" / "steps5-bs32-lr0.001" / f"trial-{trial:05d}.json").is_file()

    for argv, expected in (
            (["--trial", "999"], "trial 999 does not exist (completed trials:"),
            (["--trial", str(trial), "--steps", "0"], "--steps must be > 0, got 0"),
            (["--trial", str(trial), "--epochs", "-1"], "--epochs must be > 0"),
            (["--pareto", "-o", "x.onnx"], "-o/--output needs --trial")):
        assert main(["retrain", str(finished_run), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert main(["retrain", str(tmp_path / "nowhere"), "--trial", "0"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["retrain", str(finished_run), "--trial", str(trial), "--device", "cuda"]) == 2
        assert "no CUDA device on this machine" in capsys.readouterr().err

    # a retrain that fails part-way leaves every record of the run as it was
    before = sorted((p.relative_to(finished_run), p.stat().st_size) for p in finished_run.rglob("*") if p.is_file())
    import nasmtl.onnx

    def broken_export(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nasmtl.onnx, "export_onnx", broken_export)
    assert main(["retrain", str(finished_run), "--trial", str(trial), "--steps", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"final training of trial-{trial:05d} failed (RuntimeError: disk full); "
                            "the run's records are unchanged")
    after = sorted((p.relative_to(finished_run), p.stat().st_size) for p in finished_run.rglob("*") if p.is_file())
    assert after == before
    assert not (finished_run / "final" / "steps7-bs32-lr0.001" / f"trial-{trial:05d}.json").exists()


def test_pareto_members_with_equal_values_are_all_kept() -> None:
    import optuna

    from nasmtl.search.engine import pareto_trials

    def trial(n: int, values: list[float], design: str, **attrs: object) -> optuna.trial.FrozenTrial:
        t = optuna.trial.create_trial(values=values, user_attrs={"design": design, **attrs})
        t.number = n
        return t

    trials = [trial(0, [0.9, 10.0], "a"), trial(1, [0.9, 10.0], "b"), trial(2, [0.5, 20.0], "c"),
              trial(3, [0.9, 10.0], "a", duplicate_of=0)]
    assert [t.number for t in pareto_trials(trials, ["maximize", "minimize"])] == [0, 1]


def test_metric_names_and_the_bank_setting(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nasmtl.search.evaluate as ev
    from nasmtl.run.build import run_engine
    from nasmtl.run.lifecycle import start_run
    from tests.conftest import FakeEvaluator

    monkeypatch.setattr(ev, "build_evaluator",
                        lambda cfg, space, data=None: FakeEvaluator(
                            space, objectives=["left.accuracy", "right.accuracy", "latency_ms"]))
    cfg = _cfg(root, **{'name = "bytes"': 'name = "latency_ms"', "[final]": "bank = false\n[search.fidelity]\n"
                        "enabled = false\n[final]"})
    run = start_run(cfg, "nobank", None, tmp_path)
    assert run.study.metric_names == ["left.accuracy", "right.accuracy", "latency_ms"]   # optuna-dashboard's labels
    run_engine(run, trials=2, progress=None)
    assert not (tmp_path / "bank.jsonl").exists()


def test_final_training_shows_a_status_line_of_models(finished_run: Path) -> None:
    import io

    from nasmtl.progress import Progress
    from nasmtl.search.final import final_budget, run_final
    from nasmtl.run.lifecycle import open_run

    run = open_run(finished_run)
    trials = run.study.best_trials[:2]
    out = io.StringIO()
    prog = Progress(unit="models", stream=out, live=True)
    run_final(finished_run, run.config, trials, with_baselines=False, budget=final_budget(run.config, None, 3),
              progress=prog.say, status=prog)
    text = out.getvalue()
    n = len(trials)
    assert f"[0/{n} models]" in text and f"[{n}/{n} models]" in text and text.endswith("\n")
    if n > 1:
        assert "left" in text.split(f"[1/{n} models]", 1)[1].split("\r", 1)[0]   # the last result on the line


def test_a_search_set_up_reads_the_data_set_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nasmtl.data as data_pkg
    from nasmtl.run.build import build_parts

    calls: list[dict] = []
    real = data_pkg.load_dataset

    def counting(spec, base_dir=None):
        calls.append(dict(spec))
        return real(spec, base_dir)

    monkeypatch.setattr(data_pkg, "load_dataset", counting)
    parts = build_parts(_cfg(root))                        # a grammar with layout and quantization searched
    assert len(calls) == 1 and parts.evaluator.data.task_names == ["left", "right"]
