"""Hypervolume, non-dominated sorting and crowding distance against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasmtl.search.hypervolume import hypervolume
from nasmtl.search.pareto import crowding_distance, dominates, non_dominated_sort, pareto_indices


def test_two_objectives_minimised_staircase() -> None:
    # points (1,3), (2,2), (3,1) against (4,4): 3x1 + 2x1 + 1x1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)


def test_dominated_and_outside_points_add_nothing() -> None:
    base = hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4])
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3], [5, 0], [0, 4]], [4, 4]) == pytest.approx(base)
    assert hypervolume([], [4, 4]) == 0.0
    assert hypervolume([[math.nan, 1.0]], [4, 4]) == 0.0


def test_mixed_directions_match_minimisation() -> None:
    # accuracy maximised (ref 0), latency minimised (ref 10): (0.5, 4) and (0.8, 8)
    # area = 0.5*(10-4) + (0.8-0.5)*(10-8) = 3.0 + 0.6 = 3.6
    v = hypervolume([[0.5, 4.0], [0.8, 8.0]], [0.0, 10.0], ["maximize", "minimize"])
    assert v == pytest.approx(3.6)
    assert hypervolume([[-0.5, 4.0], [-0.8, 8.0]], [0.0, 10.0]) == pytest.approx(3.6)


def test_three_objectives_hand_computed() -> None:
    # one point: a box 1x2x3
    assert hypervolume([[1, 2, 0]], [2, 4, 3]) == pytest.approx(1 * 2 * 3)
    # two boxes from the origin corner of a unit cube ref 2: A=(0,1,1) box 2*1*1=2, B=(1,0,1) box 1*2*1=2,
    # overlap 1*1*1=1, union 3; C=(1,1,0) adds box 1*1*2=2 minus overlaps with A,B (1 each) plus triple (1) -> 1
    assert hypervolume([[0, 1, 1], [1, 0, 1]], [2, 2, 2]) == pytest.approx(3.0)
    assert hypervolume([[0, 1, 1], [1, 0, 1], [1, 1, 0]], [2, 2, 2]) == pytest.approx(4.0)


def test_three_objectives_against_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((12, 3))
    ref = np.ones(3)
    exact = hypervolume(pts, ref)
    sample = rng.random((200_000, 3))
    dominated = (pts[None, :, :] <= sample[:, None, :]).all(axis=2).any(axis=1)
    assert exact == pytest.approx(dominated.mean(), abs=0.01)


def test_one_objective_and_errors() -> None:
    assert hypervolume([[0.7], [0.9]], [0.0], ["maximize"]) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        hypervolume([[1, 2, 3, 4]], [5, 5, 5, 5])
    with pytest.raises(ValueError):
        hypervolume([[1, 2]], [3, 3], ["maximize", "up"])


def test_non_dominated_sort_and_crowding() -> None:
    pts = [[1, 3], [2, 2], [3, 1], [2, 3], [3, 3]]
    assert non_dominated_sort(pts) == [[0, 1, 2], [3], [4]]
    assert pareto_indices(pts) == [0, 1, 2]
    assert pareto_indices([[0.9, 5], [0.8, 4], [0.7, 6]], ["maximize", "minimize"]) == [0, 1]
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2])
    cd = crowding_distance(np.array([[1, 3], [2, 2], [3, 1]], dtype=float))
    assert math.isinf(cd[0]) and math.isinf(cd[2]) and cd[1] == pytest.approx(2.0)


def test_pareto_indices_is_the_first_front_with_duplicates_kept() -> None:
    rng = np.random.default_rng(3)
    for m in (2, 3):
        pts = rng.integers(0, 8, size=(200, m)).astype(float)
        pts = np.vstack([pts, pts[:20]])  # exact copies of some rows
        assert pareto_indices(pts) == sorted(non_dominated_sort(pts)[0])
    big = rng.normal(size=(40_000, 2))  # a benchmark table's size: no n x n matrix is built
    front = pareto_indices(big)
    assert front and all(not ((big <= big[i]).all(axis=1) & (big < big[i]).any(axis=1)).any() for i in front)
