"""The search engine: every sampler on a grammar and a cell space, duplicates, failures, early stopping, Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nasmtl.config import Objective
from nasmtl.search.engine import Engine, SearchBudget, pareto_trials
from nasmtl.search.evaluate import TrialFailed
from nasmtl.search.evolution import EvolutionStrategy
from nasmtl.search.pruning import MultiObjectivePruner
from nasmtl.search.samplers import Proposer, SamplerProposer, make_proposer, make_sampler
from nasmtl.search.storage import StorageError, open_storage
from tests.conftest import FakeEvaluator

OBJECTIVES = [Objective("left.accuracy", "maximize", ref=0.0), Objective("macs", "minimize", ref=1001.0)]
DIRS = [o.direction for o in OBJECTIVES]


def grammar_space(root: Path) -> Any:
    from nasmtl.spaces.grammar import GrammarSpace

    return GrammarSpace.from_file(root / "grammars" / "cnn.lark", (1, 36, 36))


def cell_space(root: Path) -> Any:
    from nasmtl.spaces.cell import CellSpace

    return CellSpace.from_file(root / "search_spaces" / "nb201.toml")


def engine(space: Any, tmp_path: Path, sampler: str = "random", trials: int = 8, evaluator: Any = None,
           pruner: MultiObjectivePruner | None = None, seed: int = 0) -> Engine:
    study = optuna.create_study(directions=DIRS, sampler=make_sampler(sampler, seed, population=4),
                                storage=open_storage(None, tmp_path))
    proposer = make_proposer(sampler, space, DIRS, seed, population=4)
    return Engine(study, space, evaluator or FakeEvaluator(space), OBJECTIVES, proposer, tmp_path,
                  SearchBudget(trials=trials), pruner)


@pytest.mark.parametrize("kind", ["grammar", "cell"])
@pytest.mark.parametrize("sampler", ["random", "nsga2", "nsga3", "tpe", "evolution"])
def test_every_sampler_runs_on_grammar_and_cell_spaces(root: Path, tmp_path: Path, sampler: str, kind: str) -> None:
    space = grammar_space(root) if kind == "grammar" else cell_space(root)
    eng = engine(space, tmp_path, sampler, trials=10)
    summary = eng.run()
    trials = eng.study.get_trials()
    assert summary.completed == 10 and summary.failed == 0
    designs = [t.user_attrs["design"] for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(set(designs)) == len(designs)
    for t in trials:
        assert space.encode(space.decode(t.user_attrs["design"])) == t.user_attrs["design"]
        assert t.user_attrs["choices"] and all(isinstance(v, str) for v in t.user_attrs["choices"].values())
    if kind == "cell" and sampler != "evolution":
        # optuna samplers drive the cell space decision by decision: each decision is a parameter
        assert all(set(t.params) == set(t.user_attrs["choices"]) for t in trials)
    assert summary.hypervolume > 0 and summary.pareto
    assert (tmp_path / "pareto.json").is_file()
    assert sorted(p.name for p in (tmp_path / "pareto").glob("*.onnx")) == [f"{n:05d}.onnx" for n in summary.pareto]


def test_duplicates_are_not_trained_twice(root: Path, tmp_path: Path) -> None:
    space = cell_space(root)
    ev = FakeEvaluator(space)
    eng = engine(space, tmp_path, "random", trials=4, evaluator=ev)
    eng.proposer = _Repeat(space)
    eng.run()
    trials = eng.study.get_trials()
    dup = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert dup and all(t.values == trials[t.user_attrs["duplicate_of"]].values for t in dup)
    assert len(ev.calls) == len(set(ev.calls)) == 4


class _Repeat(Proposer):
    """Proposes each of four designs twice in a row."""

    def __init__(self, space: Any) -> None:
        rng = np.random.default_rng(0)
        self.designs = [space.sample(rng) for _ in range(4)]
        self.i = 0

    def propose(self, trial: Any) -> Any:
        self.i += 1
        return self.designs[(self.i - 1) // 2 % 4]

    def observe(self, design: Any, values: Any) -> None:
        return None


def test_failures_are_recorded_and_the_search_goes_on(root: Path, tmp_path: Path) -> None:
    from nasmtl.train import TrainingDiverged

    space = cell_space(root)
    kinds = iter([TrialFailed("nan", "loss is nan"), RuntimeError("boom"), TrialFailed("timeout", "too slow"),
                  TrialFailed("out of memory", "oom"), TrainingDiverged("diverged", "left", 1, float("nan"))])

    def fail(key: str) -> BaseException | None:
        return next(kinds, None)

    eng = engine(space, tmp_path, "random", trials=3, evaluator=FakeEvaluator(space, fail=fail))
    summary = eng.run()
    trials = eng.study.get_trials()
    reasons = [t.user_attrs["fail_reason"] for t in trials if t.state == TrialState.FAIL]
    assert reasons == ["nan", "error", "timeout", "out of memory", "error"]
    assert "TrainingDiverged" in trials[4].user_attrs["fail_message"]
    assert summary.completed == 3 and summary.failed == 5
    assert not (tmp_path / "trials" / "00000.onnx").exists()


def test_ctrl_c_fails_the_current_trial_and_keeps_storage_consistent(root: Path, tmp_path: Path) -> None:
    space = cell_space(root)
    count = {"n": 0}

    def fail(key: str) -> BaseException | None:
        count["n"] += 1
        return KeyboardInterrupt() if count["n"] == 3 else None

    eng = engine(space, tmp_path, "random", trials=10, evaluator=FakeEvaluator(space, fail=fail))
    with pytest.raises(KeyboardInterrupt):
        eng.run()
    study = optuna.load_study(study_name=eng.study.study_name, storage=open_storage(None, tmp_path))
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert study.get_trials()[2].user_attrs["fail_reason"] == "interrupted"


def test_pruner_rule() -> None:
    p = MultiObjectivePruner(["acc", "macs"], ["maximize", "minimize"], min_trials=3, fraction=0.5)
    others = [{"acc": 0.9, "macs": 10}, {"acc": 0.8, "macs": 20}, {"acc": 0.1, "macs": 5}]
    assert not p.should_stop(0, {"acc": 0.5, "macs": 30}, others[:2])  # too few records
    assert p.should_stop(0, {"acc": 0.5, "macs": 30}, others)  # dominated by 2 of 3
    assert not p.should_stop(0, {"acc": 0.85, "macs": 15}, others)  # dominated by 1 of 3
    assert not p.should_stop(0, {"acc": 0.5, "macs": 1}, others)  # cheapest: nobody dominates
    late = MultiObjectivePruner(["acc"], ["maximize"], min_trials=1, min_epoch=2)
    assert not late.should_stop(1, {"acc": 0.0}, others)


def test_early_stopping_in_the_engine(root: Path, tmp_path: Path) -> None:
    space = cell_space(root)
    ev = FakeEvaluator(space, epochs=3)
    pruner = MultiObjectivePruner(["left.accuracy", "macs"], DIRS, min_trials=3, fraction=0.3)
    eng = engine(space, tmp_path, "random", trials=16, evaluator=ev, pruner=pruner)
    summary = eng.run()
    trials = eng.study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert summary.pruned == len(pruned) > 0
    for t in pruned:
        last = max(int(k.split(":")[1]) for k in t.user_attrs if k.startswith("epoch:"))
        assert last < 2 and "stopped early" in t.user_attrs["stopped"]
    assert all("epoch:2" in t.user_attrs for t in trials if t.state == TrialState.COMPLETE)


def test_bounds_keep_infeasible_trials_off_the_front(root: Path, tmp_path: Path) -> None:
    space = cell_space(root)
    eng = engine(space, tmp_path, "random", trials=12)
    eng.objectives = [Objective("left.accuracy", "maximize", bound=0.5), OBJECTIVES[1]]
    eng.run()
    trials = eng.study.get_trials()
    front = pareto_trials(trials, DIRS)
    assert front and all(t.values[0] >= 0.5 for t in front)
    violating = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs["constraint_violation"][0] > 0]
    named = [{k: v for k, v in t.constraints.items() if not k.isdigit()} for t in violating]
    assert violating and all(n == {"left.accuracy": t.user_attrs["constraint_violation"][0]}
                             for n, t in zip(named, violating))


def test_evolution_strategy_proposes_new_designs_and_improves_on_random(root: Path) -> None:
    space = cell_space(root)
    strat = EvolutionStrategy(space, DIRS, seed=1, population=5)
    seen = set()
    for _ in range(30):
        x = strat.ask()
        key = space.encode(x)
        assert key not in seen
        seen.add(key)
        strat.tell(x, (len(key) / 100.0, float(key.count("conv"))))
    assert len(strat._archive) >= 1


def test_evolution_breeds_from_designs_trained_longest(root: Path) -> None:
    """A design stopped at a low rung never wins a tournament against one trained to the top rung,
    however good its low-fidelity values look; both stay in the archive."""
    space = cell_space(root)
    strat = EvolutionStrategy(space, ["maximize", "minimize"], seed=0, population=3, tournament=3)
    designs = [strat.ask() for _ in range(3)]
    strat.tell(designs[0], (0.9, 1.0), fidelity=40)      # tiny after 40 steps: dominates the others
    strat.tell(designs[1], (0.5, 5.0), fidelity=360)
    strat.tell(designs[2], (0.4, 6.0), fidelity=360)     # dominated at its own fidelity
    assert all(strat._select() is designs[1] for _ in range(20))
    assert {id(a[0]) for a in strat._archive} == {id(designs[0]), id(designs[1])}
    plain = EvolutionStrategy(space, ["maximize", "minimize"], seed=0, population=3, tournament=3)
    for d, v in zip(designs, [(0.9, 1.0), (0.5, 5.0), (0.4, 6.0)]):
        plain.tell(d, v)
    assert plain._select() is designs[0]


def test_param_names_are_suffixed_when_options_change(root: Path) -> None:
    prop = SamplerProposer(cell_space(root))
    assert prop.param_name("a", ["x", "y"]) == "a"
    other = prop.param_name("a", ["x", "y", "z"])
    assert other.startswith("a#") and prop.param_name("a", ["x", "y", "z"]) == other


def test_unreachable_storage_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as e:
        open_storage("postgresql://nobody:secret@127.0.0.1:1/nasmtl")
    msg = str(e.value)
    assert "127.0.0.1:1" in msg and "secret" not in msg and "\n" not in msg
    with pytest.raises(StorageError, match="unsupported scheme"):
        open_storage("redis://localhost")
    with pytest.raises(StorageError):
        open_storage(str(tmp_path / "file.txt" / "deeper" / "j.journal")) if (tmp_path / "file.txt").write_text("x") \
            else None


def test_samplers_are_registered_with_the_benchmark_runner() -> None:
    runner = pytest.importorskip("nasmtl.nasbench.runner")
    from nasmtl.nasbench.table import BenchmarkUnavailable

    try:
        table = runner.load_table("nb201")
    except BenchmarkUnavailable as e:
        pytest.skip(str(e))
    for name in ("evolution", "nsga2", "tpe"):
        res = runner.run_benchmark(table, name, budget=25, seeds=1, objectives=("val_acc", "latency"))
        assert len(set(res.runs[0].designs)) == 25 and 0 < res.runs[0].final <= 1


def test_start_designs_are_trained_first(root: Path, tmp_path: Path) -> None:
    from nasmtl.config import ConfigError
    from nasmtl.search.start import enqueue_start, start_designs
    from nasmtl.spaces.grammar import GrammarSpace

    space = GrammarSpace.from_file(root / "grammars" / "einspace.lark", (1, 36, 36), max_macs=10_000_000)
    resnet = root / "grammars" / "baselines" / "resnet.txt"
    designs = start_designs(space, [str(resnet), "seq(relu,maxpool(k=2,stride=2))"], lambda p: Path(p))
    assert len(designs) == 2 and designs[1] == "seq(relu,maxpool(k=2,stride=2))"
    eng = engine(space, tmp_path, "evolution", trials=4)
    enqueue_start(eng.study, designs)
    eng.run()
    first = [t.user_attrs["design"] for t in sorted(eng.study.get_trials(), key=lambda t: t.number)][:2]
    assert first == designs
    with pytest.raises(ConfigError, match=r"search.start\[0\]: not a design of space"):
        start_designs(space, ["seq(relu,nope)"], lambda p: Path(p))
    with pytest.raises(ConfigError, match=r"search.start\[0\]: no start-design file"):
        start_designs(space, ["grammars/baselines/missing.txt"], lambda p: root / p)
    tight = GrammarSpace.from_file(root / "grammars" / "einspace.lark", (1, 36, 36), max_macs=100_000)
    with pytest.raises(ConfigError, match=r"macs, over the space's cap \[space\] max_macs = 100,000"):
        start_designs(tight, [str(resnet)], lambda p: Path(p))


def test_evaluation_batch_shrinks_with_activations(root: Path) -> None:
    from nasmtl.arch import activation_elements
    from nasmtl.search.evaluate import EVAL_BYTES, eval_batch_size
    from nasmtl.spaces.grammar import GrammarSpace

    space = GrammarSpace.from_file(root / "grammars" / "einspace.lark")
    heads = {"left": 10, "right": 10}
    small = space.to_arch(space.decode("seq(linear(out=16),relu)"), heads=heads)
    wide = space.to_arch(space.decode(
        "seq(route(im2col(k=3,stride=1,padding=1),seq(linear(out=128),seq(layernorm,gelu)),col2im),"
        "route(im2col(k=1),seq(layernorm,linear(out=128)),col2im))"), heads=heads)
    assert activation_elements(wide) > 20 * activation_elements(small)
    assert eval_batch_size(small, 512) == 512
    b = eval_batch_size(wide, 512)
    assert 1 <= b < 512 and b * 4 * activation_elements(wide) <= EVAL_BYTES


@pytest.mark.parametrize("grammar", ["cnn.lark", "convnet.lark"])
def test_grammar_decisions_become_trial_params_under_evolution(root: Path, grammar: str) -> None:
    from nasmtl.spaces.base import design_options
    from nasmtl.spaces.grammar import load_space

    space = load_space(root / "grammars" / grammar, (1, 28, 28))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("evolution", 0))
    prop = make_proposer("evolution", space, ["maximize", "minimize"], seed=0, population=3)
    for i in range(5):
        trial = study.ask()
        prop.learn_distributions(study.get_trials(deepcopy=False))
        design = prop.propose(trial)
        prop.record(trial, space, design)
        study.tell(trial, [float(i), 1.0])
        prop.observe(design, [float(i), 1.0])
        frozen = study.get_trials(deepcopy=False)[-1]
        options = design_options(space, design)
        assert frozen.params == space.choices(design) and set(options) == set(frozen.params)
        assert all(frozen.params[k] in options[k] and len(options[k]) > 1 for k in options)


def test_a_design_another_worker_is_training_is_not_trained_again(root: Path, tmp_path: Path) -> None:
    import os

    space = cell_space(root)
    design = space.sample(np.random.default_rng(5))
    key = space.encode(design)
    ev = FakeEvaluator(space)
    eng = engine(space, tmp_path, "random", trials=2, evaluator=ev)
    other = eng.study.ask()                                # another worker (alive: this process) is training it
    other.set_user_attr("worker", f"{__import__('socket').gethostname()}:{os.getpid()}")
    other.set_user_attr("design", key)
    eng.proposer = _Fixed([design, design])
    out = eng.run_trial()
    assert out.state == "duplicate" and ev.calls == []
    t = eng.study.get_trials()[out.number]
    assert t.state == TrialState.FAIL and t.user_attrs["duplicate_of"] == other.number
    summary = eng.summary(eng.study.get_trials())
    assert summary.failed == 0 and summary.duplicates == 1
    assert not (tmp_path / "trials" / f"{out.number:05d}.json").exists()


def test_a_trial_whose_process_died_before_recording_itself_is_failed(root: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import nasmtl.search.engine as engine_module
    from nasmtl.search.engine import fail_dead_trials

    eng = engine(cell_space(root), tmp_path, "random", trials=1)
    orphan = eng.study.ask()                               # killed right after ask(): no attribute at all
    assert fail_dead_trials(eng.study) == []               # too young to call
    monkeypatch.setattr(engine_module, "ORPHAN_SECONDS", 0.0)
    assert fail_dead_trials(eng.study) == [orphan.number]
    t = eng.study.get_trials()[orphan.number]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "worker died before it recorded itself"


class _Fixed(Proposer):
    """Proposes the given designs in order."""

    def __init__(self, designs: list) -> None:
        self.designs = list(designs)

    def propose(self, trial: Any) -> Any:
        return self.designs.pop(0)
