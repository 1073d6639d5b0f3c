"""Layout spaces: exact counts, uniform sampling, valid mutations and crossovers, canonical strings, costs."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from nasmtl.arch import arch_cost
from nasmtl.arch.compose import compose, merge_stages, task_costs
from nasmtl.examples import two_branch_cnn_stages
from nasmtl.spaces.base import SpaceError
from nasmtl.spaces.layout import LayoutSpace, count_layouts, refines, set_partitions

SHAPE = (1, 36, 36)
HEADS = {"left": 10, "right": 10}


def brute_force(tasks: list[str], n_stages: int) -> set[tuple]:
    """Every tuple of set partitions that refines stage by stage (independent of the space's code)."""
    parts = list(set_partitions(tasks))
    top = (tuple(tasks),)
    out = set()
    for combo in itertools.product(parts, repeat=n_stages):
        chain = (top, *combo)
        if all(refines(chain[i + 1], chain[i]) for i in range(n_stages)):
            out.add(combo)
    return out


def test_counts_match_hand_enumeration() -> None:
    # by hand: T=2 -> S+1 layouts (branch at stage 0..S-1, or never);
    # T=3, S=2: {abc} then 5 partitions, 3 x {a|bc} then 2 each, {a|b|c} then 1 -> 12
    hand = {(1, 3): 1, (2, 1): 2, (2, 2): 3, (2, 3): 4, (3, 1): 5, (3, 2): 12, (3, 3): 22, (4, 1): 15}
    for (t, s), n in hand.items():
        assert count_layouts(t, s) == n
    for t in range(1, 5):
        for s in range(1, 4):
            tasks = [f"t{i}" for i in range(t)]
            space = LayoutSpace(tasks, s)
            listed = {x.partitions for x in space.all_layouts()}
            assert listed == brute_force(tasks, s)
            assert space.size() == len(listed) == count_layouts(t, s)


def test_sampling_is_uniform_chi_square() -> None:
    space = LayoutSpace(["a", "b", "c"], 3)
    rng = np.random.default_rng(0)
    k, per = 22, 200
    draws = Counter(space.encode(space.sample(rng)) for _ in range(k * per))
    assert len(draws) == k
    chi2 = sum((c - per) ** 2 / per for c in draws.values())
    assert chi2 < 46.80  # chi-square critical value, 21 degrees of freedom, alpha = 0.001
    # the two ends are drawn as often as any other layout (1/22 each), not half the time
    assert abs(draws[space.encode(space.shared())] / (k * per) - 1 / k) < 0.02
    assert abs(draws[space.encode(space.separate())] / (k * per) - 1 / k) < 0.02


def test_mutations_stay_valid_and_reach_every_layout() -> None:
    space = LayoutSpace(["a", "b", "c"], 3)
    rng = np.random.default_rng(1)
    x = space.sample(rng)
    for _ in range(2000):
        y = space.mutate(x, rng)
        assert y != x
        assert space.decode(space.encode(y)) == y
        z = space.crossover(x, y, rng)
        assert space.decode(space.encode(z)) == z
        x = y
    reached, frontier = {space.encode(space.shared())}, [space.shared()]
    while frontier:
        cur = frontier.pop()
        for _ in range(60):
            s = space.encode(space.mutate(cur, rng))
            if s not in reached:
                reached.add(s)
                frontier.append(space.decode(s))
    assert len(reached) == space.size()


def test_mutation_kinds() -> None:
    space = LayoutSpace(["a", "b", "c", "d"], 3)
    rng = np.random.default_rng(2)
    shared, separate = space.shared(), space.separate()
    for _ in range(20):
        assert sum(space.mutate(shared, rng).n_groups()) > 3  # only splits or moves apply
        assert sum(space.mutate(separate, rng).n_groups()) < 12  # only merges or moves apply
    x = space.decode("a+b+c+d/a+b|c+d/a|b|c+d")
    moved = space._move(x, "a", 3, rng)
    assert moved.branch_stage("a") == 3 and space.encode(moved) != space.encode(x)
    assert space._move(x, "d", 0, rng).branch_stage("d") == 0


def test_canonical_string_and_decode_errors() -> None:
    s1 = LayoutSpace(["left", "right", "seg"], 2)
    s2 = LayoutSpace(["seg", "right", "left"], 2)
    a = s1.make([[["right", "left"], ["seg"]], [["seg"], ["left"], ["right"]]])
    b = s2.make([[["seg"], ["left", "right"]], [["right"], ["seg"], ["left"]]])
    assert s1.encode(a) == s2.encode(b) == "left+right|seg/left|right|seg"
    assert s1.decode("seg|right+left/right|left|seg") == a
    for bad in ("left|right+seg/left+seg|right", "left+right/left", "left+right+seg", "left+right+x/left|right|seg",
                "", "left+right+seg/left+right+seg/left|right|seg"):
        with pytest.raises(SpaceError):
            s1.decode(bad)
    with pytest.raises(SpaceError, match="may not"):
        LayoutSpace(["a|b", "c"], 2)


def test_sample_with_outside_choices_stays_valid() -> None:
    space = LayoutSpace(["a", "b", "c"], 3)
    seen = set()
    for k in range(5):
        x = space.sample_with(lambda key, options, weights: options[(k + int(key[-1])) % len(options)])
        space.make(x.partitions)
        seen.add(space.encode(x))
    assert len(seen) > 1
    assert set(space.choices(space.shared())) == {"layout.s0", "layout.s1", "layout.s2"}


def test_extreme_layouts_parameter_ratio() -> None:
    stages = two_branch_cnn_stages(SHAPE, width=8)
    tasks = list(HEADS)
    space = LayoutSpace(tasks, 2)
    shared = compose(stages, space.shared().as_lists(), HEADS)
    separate = compose(stages, space.separate().as_lists(), HEADS)
    backbone = sum(arch_cost(st).params for st in stages)
    heads = arch_cost(shared).params - backbone
    assert heads > 0
    assert arch_cost(separate).params == len(tasks) * backbone + heads
    assert arch_cost(separate).macs == pytest.approx(2 * arch_cost(shared).macs, rel=0.01)
    branched = compose(stages, space.decode("left+right/left|right").as_lists(), HEADS)
    per = task_costs(branched)
    whole = arch_cost(branched)
    assert per["left"].params < whole.params and per["left"].params + per["right"].params > whole.params
    assert per["left"].params == per["right"].params == backbone + heads // 2
    assert task_costs(separate)["left"].params == backbone + heads // 2
    assert task_costs(shared)["left"].macs == task_costs(separate)["left"].macs


def test_merge_stages_chains_in_order() -> None:
    stages = two_branch_cnn_stages(SHAPE, width=8)
    merged = merge_stages(stages, 1)
    assert len(merged) == 1
    assert arch_cost(merged[0]).params == sum(arch_cost(s).params for s in stages)
    assert merged[0].shape(merged[0].outputs["out"]) == stages[-1].shape(stages[-1].outputs["out"])
    assert merge_stages(stages, 2) == list(stages)
