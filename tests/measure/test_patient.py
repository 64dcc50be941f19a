"""Per-patient summary (cases.csv): the primary clot and its fragments, not distant specks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clotseg.io.volume import Volume
from clotseg.measure.clots import measure_case
from clotseg.measure.patient import FRAGMENT_GAP_MM, summarise_patient
from tests.helpers import DIRECTIONS

SHAPE = (60, 50, 20)
SPACING = (0.5, 0.5, 1.0)


def volumes(direction: str = "identity"):
    geo = dict(spacing=SPACING, origin=(-10.0, 20.0, 5.0),
               direction=DIRECTIONS[direction].ravel())
    mask = np.zeros(SHAPE, np.uint8)
    cta = np.full(SHAPE, 35, np.int16)
    ncct = np.full(SHAPE, 30, np.int16)
    prob = np.full(SHAPE, 0.01, np.float32)
    # the clot: 10 x 4 x 4 voxels (5 mm along x), CTA 70 / NCCT 55 -> 15 HU
    mask[10:20, 10:14, 8:12] = 1
    cta[10:20, 10:14, 8:12], ncct[10:20, 10:14, 8:12] = 70, 55
    prob[10:20, 10:14, 8:12] = 0.95
    # a fragment 3 mm (6 voxels) further along x: same HU
    mask[26:30, 10:14, 8:12] = 1
    cta[26:30, 10:14, 8:12], ncct[26:30, 10:14, 8:12] = 70, 55
    prob[26:30, 10:14, 8:12] = 0.7
    # a speck on another vessel 20 mm away, very bright on CTA
    mask[15:17, 45:47, 8:10] = 1
    cta[15:17, 45:47, 8:10], ncct[15:17, 45:47, 8:10] = 300, 40
    prob[15:17, 45:47, 8:10] = 0.6
    return (Volume(mask, **geo), Volume(cta, **geo), Volume(ncct, **geo), prob)


@pytest.mark.parametrize("direction", ["identity", "permuted"])
def test_primary_clot_keeps_fragment_and_ignores_distant_speck(direction):
    mask, cta, ncct, prob = volumes(direction)
    row = summarise_patient("p1", mask, cta, ncct, prob)
    assert row["n_components"] == 3
    assert row["clot_fragments"] == 2
    assert row["other_components"] == 1
    voxel = float(np.prod(SPACING))
    assert row["volume_mm3"] == pytest.approx((160 + 64) * voxel)
    assert row["other_volume_mm3"] == pytest.approx(8 * voxel)
    # the bright speck does not move the density or perviousness of the clot
    assert row["perviousness_hu"] == pytest.approx(15.0)
    assert row["ncct_mean_hu"] == pytest.approx(55.0)
    assert row["pervious"] is True
    assert row["max_prob"] == pytest.approx(0.95)
    # length: the two pieces' centreline lengths added up, as clots.csv measures each
    rows = measure_case("p1", mask, cta, ncct, prob)
    pieces = sorted(r["length_mm"] for r in rows)[1:]  # the speck is the smallest
    assert row["length_mm"] == pytest.approx(sum(pieces), rel=1e-6)
    # centroid in patient coordinates: between the two pieces, weighted by voxels
    assert math.isfinite(row["centroid_x_mm"])


def test_the_component_holding_most_probability_is_primary_not_the_highest_peak():
    mask, cta, ncct, prob = volumes()
    prob[15:17, 45:47, 8:10] = 0.99  # the speck peaks higher, the clot holds far more
    row = summarise_patient("p", mask, cta, ncct, prob)
    assert row["clot_fragments"] == 2 and row["other_components"] == 1
    prob[10:20, 10:14, 8:12] = prob[26:30, 10:14, 8:12] = 0.02  # now the speck holds more
    row = summarise_patient("p", mask, cta, ncct, prob)
    assert row["clot_fragments"] == 1 and row["other_components"] == 2


def test_without_probability_the_largest_component_is_primary():
    mask, cta, ncct, _ = volumes()
    row = summarise_patient("p", mask, cta, ncct)
    assert row["clot_fragments"] == 2 and math.isnan(row["max_prob"])


def test_fragment_gap_is_a_limit():
    mask, cta, ncct, prob = volumes()
    arr = mask.array.copy()
    arr[26:30] = 0
    shift = int(FRAGMENT_GAP_MM / SPACING[0]) + 12  # beyond the gap
    arr[20 + shift:24 + shift, 10:14, 8:12] = 1
    row = summarise_patient("p", mask.with_array(arr), cta, ncct, prob)
    assert row["clot_fragments"] == 1 and row["other_components"] == 2


def test_empty_mask_gives_a_row_without_clot():
    mask, cta, ncct, prob = volumes()
    row = summarise_patient("p", mask.with_array(np.zeros(SHAPE, np.uint8)), cta, ncct, prob)
    assert row["has_clot"] is False and row["volume_mm3"] == 0.0
    assert row["max_prob"] == pytest.approx(float(prob.max()))
