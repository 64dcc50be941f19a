"""Mined negatives: the network's own false positives become crop centres."""

from __future__ import annotations

import numpy as np

from clotseg.training.mining import (
    MAX_POINTS,
    POINTS_PER_COMPONENT,
    false_positive_points,
    mining_cases,
)


def _scene():
    """A clot with a hazy fringe, a big false positive and a one-voxel speck."""
    prob = np.zeros((40, 40, 20), np.float32)
    mask = np.zeros(prob.shape, np.uint8)
    mask[5:9, 5:9, 5:9] = 1
    prob[4:10, 4:10, 4:10] = 0.9  # the clot and a one-voxel fringe around it
    prob[20:30, 20:30, 10:14] = 0.95  # a confident segment on another vessel
    prob[35, 2, 17] = 0.7  # a speck
    return prob, mask


def test_points_lie_on_the_false_positives_and_every_component_counts():
    prob, mask = _scene()
    pts = false_positive_points(prob, mask, 0.5, "case:4")
    z, x, y = pts.T
    assert (prob[x, y, z] >= 0.5).all()
    near_clot = (x < 12) & (y < 12) & (z < 12)
    assert not near_clot.any()  # the clot and its fringe are not false positives
    big = (x >= 20) & (x < 30)
    assert big.sum() == POINTS_PER_COMPONENT  # 400 voxels, 8 points
    assert [35, 2, 17] in np.column_stack([x, y, z]).tolist()  # the speck is not drowned
    assert len(pts) == POINTS_PER_COMPONENT + 1
    # the same seed draws the same points, another seed other ones
    assert np.array_equal(pts, false_positive_points(prob, mask, 0.5, "case:4"))
    assert not np.array_equal(pts, false_positive_points(prob, mask, 0.5, "case:9"))
    # nothing above the threshold outside the clot: no points
    assert false_positive_points(prob, mask, 0.99, "case:4").shape == (0, 3)


def test_points_are_capped_per_case():
    prob = np.zeros((64, 64, 64), np.float32)
    prob[::4, ::4, ::4] = 0.9  # 4096 isolated specks
    pts = false_positive_points(prob, np.zeros(prob.shape, np.uint8), 0.5, "c")
    assert len(pts) == MAX_POINTS
    assert len({tuple(p) for p in pts.tolist()}) == MAX_POINTS


def test_mining_visits_every_case_in_turn():
    seen = [mining_cases(10, 4, k) for k in range(3)]
    assert all(len(s) == 4 for s in seen)
    assert sorted(set().union(*seen)) == list(range(10))
    assert mining_cases(3, 16, 5) == [0, 1, 2]
