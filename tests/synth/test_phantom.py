"""The phantom: deterministic, geometrically consistent, HU in published ranges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clotseg.synth import case_seed, make_case


@pytest.fixture(scope="module")
def cases():
    return [make_case(case_seed(7, k)) for k in range(8)]


def test_deterministic():
    a, b, c = make_case(11), make_case(11), make_case(12)
    np.testing.assert_array_equal(a.cta.array, b.cta.array)
    np.testing.assert_array_equal(a.ncct.array, b.ncct.array)
    np.testing.assert_array_equal(a.clot.array, b.clot.array)
    assert a.cta.grid.same_as(b.cta.grid)
    assert a.cta.shape != c.cta.shape or not np.array_equal(a.cta.array, c.cta.array)


def test_case_seed_independent_of_cohort_size():
    assert case_seed(3, 4) == case_seed(3, 4)
    assert len({case_seed(3, k) for k in range(50)}) == 50


def test_grids_equal_and_mask_binary(cases):
    for c in cases:
        assert c.ncct.grid.same_as(c.cta.grid) and c.clot.grid.same_as(c.cta.grid)
        assert c.clot.array.dtype == np.uint8
        assert set(np.unique(c.clot.array)) <= {0, 1}


def test_geometry_varies(cases):
    directions = {tuple(np.round(c.cta.direction, 3)) for c in cases}
    assert len(directions) > 1
    assert any(not np.allclose(c.cta.direction, np.eye(3).ravel()) for c in cases)


def test_clot_inside_bright_vessel_with_filling_defect():
    c = make_case(5, clot=True)
    m = c.clot.array.astype(bool)
    assert m.sum() > 10
    cta = c.cta.array.astype(float)
    ncct = c.ncct.array.astype(float)
    # The clot is a dark filling defect on CTA compared to the lumen around it ...
    ring = ndimage.binary_dilation(m, iterations=3) & ~m
    lumen = ring & (cta > 150)
    assert lumen.sum() > 0 and np.median(cta[lumen]) > np.median(cta[m]) + 80
    # ... and hyperdense on NCCT compared to brain/CSF.
    assert ncct[m].mean() > np.median(ncct[(ncct > -50) & (ncct < 100)])


def test_clot_free_cases_have_empty_masks():
    c = make_case(1, clot=False)
    assert c.clot.array.sum() == 0 and not c.truth["has_clot"]
    frac = np.mean([not make_case(case_seed(9, k)).truth["has_clot"] for k in range(25)])
    assert 0.02 < frac < 0.35


def test_hu_statistics_in_published_ranges(cases):
    with_clot = [c for c in cases if c.truth["has_clot"]]
    assert with_clot
    ncct_clot = np.mean([c.truth["ncct_mean_hu"] for c in with_clot])
    assert 35 < ncct_clot < 75  # 54 ± 8 HU drawn, lowered by partial volume with CSF
    perv = np.median([c.truth["perviousness_hu"] for c in with_clot])
    assert 3 < perv < 35  # Δ median ≈ 12 HU
    for c in cases:
        cta, ncct = c.cta.array, c.ncct.array
        assert cta.max() > 150  # contrast-filled lumen
        assert ncct.max() > 700  # skull-base bone
        brain = np.median(ncct[(ncct > -100) & (ncct < 100)])
        assert 10 < brain < 45
    assert any(c.ncct.array.min() < -500 for c in cases)  # sphenoid sinus air, when in view


def test_truth_volume_is_voxel_count_times_voxel_volume(cases):
    for c in cases:
        assert c.truth["volume_mm3"] == pytest.approx(c.clot.array.sum() * c.cta.voxel_volume)


def test_unregistered_ncct_is_moved():
    a = make_case(21, registered=True)
    b = make_case(21, registered=False)
    np.testing.assert_array_equal(a.cta.array, b.cta.array)
    assert not np.array_equal(a.ncct.array, b.ncct.array)
    motion = b.truth["ncct_motion"]
    assert max(abs(v) for v in motion["rotation_deg"]) <= 3
    assert max(abs(v) for v in motion["translation_mm"]) <= 2


def test_fast():
    import time

    t = time.perf_counter()
    make_case(2)
    assert time.perf_counter() - t < 3.0  # well under 1 s normally; generous for CI load
