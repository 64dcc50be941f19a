"""The primary-clot rule of post-processing: keep the component holding the most
probability and its fragments, drop and report the rest, distances in millimetres."""

import numpy as np
import pytest

from clotseg.masks import FRAGMENT_GAP_MM, components, keep_primary, primary_component


def _scene(spacing=(0.5, 0.5, 2.0)):
    """A clot of 2 pieces 4 mm apart along z and a speck 30 mm away in x."""
    mask = np.zeros((100, 40, 30), bool)
    prob = np.zeros(mask.shape, np.float32)
    mask[10:16, 10:16, 5:10] = True            # clot, z 5..9 (10 mm)
    mask[10:16, 10:16, 12:14] = True           # fragment: gap of 2 slices = 4 mm
    mask[70:74, 10:14, 5:7] = True             # speck 30 mm away along x
    prob[mask] = 0.7
    prob[12, 12, 7] = 0.97                     # the clot is the most probable
    prob[71, 11, 5] = 0.9
    return mask, prob, spacing


def test_keeps_primary_and_fragment_and_reports_the_speck():
    mask, prob, spacing = _scene()
    kept, dropped = keep_primary(mask, prob, spacing)
    assert kept.dtype == np.uint8
    assert kept[10:16, 10:16, 5:10].all() and kept[10:16, 10:16, 12:14].all()
    assert not kept[70:74].any()
    assert len(dropped) == 1
    speck = dropped[0]
    assert speck["volume_mm3"] == pytest.approx(4 * 4 * 2 * 0.5 * 0.5 * 2.0)
    assert speck["max_prob"] == pytest.approx(0.9)
    # nearest surfaces: x 16..69 -> 54 voxels of 0.5 mm, same y and z range
    assert speck["distance_mm"] == pytest.approx(27.0, abs=0.6)


def test_the_component_holding_most_probability_wins_not_the_highest_peak():
    """A small speck that peaks higher (0.99) than the clot (0.97) loses to the clot,
    which holds far more probability; the speck wins once the clot's voxels are barely
    probable; without probabilities the largest component wins."""
    mask, prob, spacing = _scene()
    prob[70:74, 10:14, 5:7] = 0.99  # the speck: every voxel surer than the clot's peak
    kept, dropped = keep_primary(mask, prob, spacing)
    assert kept[10:16, 10:16, 5:10].all() and kept[10:16, 10:16, 12:14].all()
    assert not kept[70:74].any() and dropped[0]["max_prob"] == pytest.approx(0.99)
    prob[10:16] = np.where(mask[10:16], 0.05, 0.0)  # 252 clot voxels at 0.05 < 32 at 0.99
    kept, dropped = keep_primary(mask, prob, spacing)
    assert kept[70:74, 10:14, 5:7].all() and not kept[10:16].any()
    assert sorted(d["volume_mm3"] for d in dropped) == pytest.approx(
        [6 * 6 * 2 * 0.5, 6 * 6 * 5 * 0.5])
    kept, _ = keep_primary(mask, None, spacing)
    assert kept[10:16, 10:16, 5:10].all() and not kept[70:74].any()


def test_fragment_gap_is_in_millimetres_not_voxels():
    mask = np.zeros((10, 10, 40), bool)
    mask[4:6, 4:6, 0:3] = True
    gap_slices = 6  # 6 slices x 2.5 mm = 15 mm > FRAGMENT_GAP_MM, but 6 voxels < 10
    mask[4:6, 4:6, 3 + gap_slices:3 + gap_slices + 2] = True
    prob = np.where(mask, 0.8, 0.0)
    kept, dropped = keep_primary(mask, prob, (1.0, 1.0, 2.5))
    assert components(kept)[1] == 1 and len(dropped) == 1
    assert dropped[0]["distance_mm"] > FRAGMENT_GAP_MM
    kept, dropped = keep_primary(mask, prob, (1.0, 1.0, 1.0))
    assert components(kept)[1] == 2 and dropped == []


def test_single_or_empty_mask_is_unchanged():
    empty = np.zeros((5, 5, 5), bool)
    kept, dropped = keep_primary(empty, None, (1, 1, 1))
    assert not kept.any() and dropped == []
    one = empty.copy()
    one[1:3, 1:3, 1:3] = True
    kept, dropped = keep_primary(one, np.where(one, 0.6, 0), (1, 1, 1))
    assert (kept == one).all() and dropped == []
    labels, n = components(one)
    assert primary_component(labels, n, None) == 1


def test_grow_into_lengthens_the_kept_clot_and_adds_no_component():
    """The confident core (0.9) grows along its touching 0.4 tail, not into a separate
    0.4 blob, not past a 0.2 gap, and never into an excluded (dropped) component."""
    from clotseg.masks import grow_into

    prob = np.zeros((30, 5, 5), np.float32)
    prob[5:10, 2, 2] = 0.9  # the core the threshold keeps
    prob[10:16, 2, 2] = 0.4  # the rest of the clot, just below the threshold
    prob[16, 2, 2] = 0.2  # a gap below the growth level
    prob[17:20, 2, 2] = 0.4  # beyond the gap: not connected at >= 0.3
    prob[25:28, 0, 0] = 0.45  # a separate faint blob
    core = prob >= 0.8
    grown = grow_into(core, prob, 0.3)
    assert grown.dtype == np.uint8
    assert grown[:, 2, 2].nonzero()[0].tolist() == list(range(5, 16))
    assert not grown[25:28, 0, 0].any() and not grown[17:20].any()
    assert grow_into(np.zeros_like(core), prob, 0.3).sum() == 0  # nothing kept: nothing grows
    dropped = np.zeros_like(core)
    dropped[12:14, 2, 2] = True  # a dropped component sitting on the tail blocks it
    assert grow_into(core, prob, 0.3, exclude=dropped)[:, 2, 2].nonzero()[0].tolist() == \
        list(range(5, 12))


def test_confirmation_keeps_the_components_a_second_model_also_marks():
    """A component stays when the confirming probability reaches the threshold in any one
    of its voxels; the others are dropped and reported, and the kept clot does not grow
    back into a dropped one through a bridge of probability."""
    from clotseg.masks import keep_confirmed, keep_primary_grown

    mask, prob, spacing = _scene()
    confirm = np.zeros(mask.shape, np.float32)
    confirm[13, 13, 12] = 0.85  # one voxel of the fragment
    confirm[71, 11, 6] = 0.6  # the speck: below the threshold
    kept, dropped = keep_confirmed(mask, prob, confirm, 0.8, spacing)
    assert kept.dtype == np.uint8
    assert kept[10:16, 10:16, 12:14].all() and not kept[10:16, 10:16, 5:10].any()
    assert not kept[70:74].any()
    assert sorted(d["confirm_max_prob"] for d in dropped) == [0.0, 0.6]
    assert all(d["reason"] == "unconfirmed" for d in dropped)
    assert sorted(d["volume_mm3"] for d in dropped) == [16.0, 90.0]  # speck, clot body
    assert keep_confirmed(np.zeros_like(mask), prob, confirm, 0.8, spacing)[1] == []
    # The body was dropped; a 0.6 bridge between it and the kept fragment does not bring
    # it back when it is excluded from growth.
    bridge = prob.copy()
    bridge[10:16, 10:16, 10:12] = 0.6
    off = mask & (kept == 0)
    grown, _ = keep_primary_grown(kept, bridge, spacing, 0.5, exclude=off)
    assert not grown[10:16, 10:16, 5:10].any() and grown[10:16, 10:16, 10:14].all()
    assert keep_primary_grown(kept, bridge, spacing, 0.5)[0][10:16, 10:16, 5:10].all()
