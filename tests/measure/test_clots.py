"""Clot measurements: volume, density, perviousness, LPS centroid, contralateral density,
clots.csv; checked on constructed volumes with known values and on the phantom."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from clotseg.errors import ClotsegError
from clotseg.io.volume import Volume
from clotseg.measure.clots import (
    CLOTS_CSV_COLUMNS,
    head_midline_x,
    measure_case,
    write_clots_csv,
)
from tests.helpers import DIRECTIONS

SHAPE = (30, 26, 14)
SPACING = (0.45, 0.6, 1.5)


def geometry(direction: str) -> dict:
    return dict(spacing=SPACING, origin=(-12.5, 30.25, 7.0),
                direction=DIRECTIONS[direction].ravel())


def two_clots(direction: str = "identity"):
    """Two clots with known HU: A (4×3×5 = 60 voxels) CTA 60 / NCCT 45 → 15 HU, pervious;
    B (2×2×3 = 12 voxels) CTA 50 / NCCT 44 (and 40 in half of it) → not pervious."""
    mask = np.zeros(SHAPE, np.uint8)
    cta = np.full(SHAPE, 35, np.int16)
    ncct = np.full(SHAPE, 30, np.int16)
    mask[5:9, 4:7, 2:7] = 1
    cta[5:9, 4:7, 2:7], ncct[5:9, 4:7, 2:7] = 60, 45
    mask[20:22, 18:20, 9:12] = 1
    cta[20:22, 18:20, 9:12] = 50
    ncct[20:22, 18:20, 9:12] = 44
    ncct[20:22, 18:20, 9] = 40  # 4 of the 12 voxels
    geo = geometry(direction)
    return Volume(mask, **geo), Volume(cta, **geo), Volume(ncct, **geo)


def test_volume_density_perviousness_are_exact():
    mask, cta, ncct = two_clots()
    prob = np.where(mask.array > 0, 0.8, 0.1)
    prob[6, 5, 3] = 0.97
    rows = measure_case("c1", mask, cta, ncct, prob)
    assert [r["component"] for r in rows] == [1, 2]  # largest first
    assert all(r["n_components"] == 2 and r["case_id"] == "c1" for r in rows)
    a, b = rows
    voxel = 0.45 * 0.6 * 1.5
    assert a["volume_mm3"] == pytest.approx(60 * voxel)
    assert b["volume_mm3"] == pytest.approx(12 * voxel)
    assert a["ncct_mean_hu"] == 45 and a["ncct_median_hu"] == 45 and a["cta_mean_hu"] == 60
    assert a["perviousness_hu"] == 15 and a["pervious"] is True
    nb = (8 * 44 + 4 * 40) / 12
    assert b["ncct_mean_hu"] == pytest.approx(nb) and b["ncct_median_hu"] == 44
    assert b["perviousness_hu"] == pytest.approx(50 - nb) and b["pervious"] is False
    assert a["max_prob"] == pytest.approx(0.97) and b["max_prob"] == pytest.approx(0.8)
    assert a["length_mm"] == pytest.approx(5 * 1.5, rel=0.15)  # 5 slices of 1.5 mm
    assert list(a) == CLOTS_CSV_COLUMNS


@pytest.mark.parametrize("direction", ["oblique", "permuted", "ras_flip"])
def test_centroid_in_lps(direction):
    mask, cta, ncct = two_clots(direction)
    rows = measure_case("c", mask, cta, ncct)
    # Independent reference: SimpleITK's own index-to-physical mapping (LPS).
    image = cta.to_sitk()
    centre_a = (5 + 8) / 2, (4 + 6) / 2, (2 + 6) / 2
    expected = image.TransformContinuousIndexToPhysicalPoint(centre_a)
    got = rows[0]["centroid_x_mm"], rows[0]["centroid_y_mm"], rows[0]["centroid_z_mm"]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_empty_mask_gives_one_row():
    mask, cta, ncct = two_clots()
    empty = mask.with_array(np.zeros(SHAPE, np.uint8))
    (row,) = measure_case("none", empty, cta, ncct, np.full(SHAPE, 0.3))
    assert row["component"] == 0 and row["n_components"] == 0
    assert row["volume_mm3"] == 0.0 and row["length_mm"] == 0.0
    assert math.isnan(row["ncct_mean_hu"]) and math.isnan(row["perviousness_hu"])
    assert row["pervious"] is None and row["max_prob"] == pytest.approx(0.3)


def test_inputs_must_share_the_cta_grid():
    mask, cta, ncct = two_clots()
    moved = Volume(ncct.array, SPACING, (0.0, 0.0, 0.0), ncct.direction)
    with pytest.raises(ClotsegError, match="NCCT is not on the CTA grid"):
        measure_case("c", mask, cta, moved)
    with pytest.raises(ClotsegError, match="mask is not on the CTA grid"):
        measure_case("c", Volume(mask.array, (0.5, 0.6, 1.5), mask.origin, mask.direction),
                     cta, ncct)
    with pytest.raises(ClotsegError, match="probability map shape"):
        measure_case("c", mask, cta, ncct, np.zeros((2, 2, 2)))


def test_write_clots_csv(tmp_path):
    mask, cta, ncct = two_clots()
    rows = measure_case("c1", mask, cta, ncct)
    rows += measure_case("c2", mask.with_array(np.zeros(SHAPE, np.uint8)), cta, ncct)
    path = write_clots_csv(tmp_path / "out" / "clots.csv", rows)
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == CLOTS_CSV_COLUMNS
    assert [(r["case_id"], r["component"]) for r in table] == [("c1", "1"), ("c1", "2"),
                                                               ("c2", "0")]
    assert float(table[0]["perviousness_hu"]) == 15.0 and table[0]["pervious"] == "True"
    assert table[2]["ncct_mean_hu"] == "nan" and table[2]["pervious"] == ""
    assert [p.name for p in path.parent.iterdir()] == ["clots.csv"]


def symmetric_head(direction: str = "identity", right_z_mm: float = 0.0):
    """A head (ellipsoid, 30 HU) centred at x = +3 mm inside air, with two arteries
    mirror-symmetric about that plane (CTA 300, NCCT 42 HU) except that the right one is
    moved by ``right_z_mm``; a clot (NCCT 56, CTA 66) fills a piece of the left one."""
    shape, spacing = (81, 61, 21), (0.5, 0.5, 1.0)
    d = DIRECTIONS[direction]
    # Grid centred on (3, 0, 0): the middle voxel (odd sizes) lies on the midline plane.
    origin = np.array([3.0, 0.0, 0.0]) - d @ (np.array(spacing) * (np.array(shape) - 1) / 2)
    geo = dict(spacing=spacing, origin=tuple(origin), direction=d.ravel())
    probe = Volume(np.zeros(shape, np.int16), **geo)
    pts = probe.grid.index_to_physical(np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)
    x, y, z = pts[..., 0] - 3.0, pts[..., 1], pts[..., 2]
    head = (x / 17) ** 2 + (y / 13) ** 2 + (z / 20) ** 2 <= 1
    artery = (np.hypot(np.abs(x) - 9.0, z - np.where(x < 0, right_z_mm, 0.0)) <= 1.6) & (
        np.abs(y) < 10)
    clot = artery & (x > 0) & (y > -4) & (y < 4)
    ncct = np.where(head, 30, -1000) + np.where(artery, 12, 0) + np.where(clot, 14, 0)
    cta = np.where(head, 30, -1000) + np.where(artery & ~clot, 270, 0) + np.where(clot, 36, 0)
    return (Volume(clot.astype(np.uint8), **geo), Volume(cta.astype(np.int16), **geo),
            Volume(ncct.astype(np.int16), **geo))


@pytest.mark.parametrize(("direction", "right_z_mm"),
                         [("identity", 0.0), ("ras_flip", 0.0), ("identity", 2.0)])
def test_relative_density_against_mirrored_artery(direction, right_z_mm):
    # With right_z_mm the mirror image misses the artery; the CTA-guided search finds it.
    mask, cta, ncct = symmetric_head(direction, right_z_mm)
    assert head_midline_x(ncct) == pytest.approx(3.0, abs=0.05)
    (row,) = measure_case("sym", mask, cta, ncct)
    assert row["ncct_mean_hu"] == 56
    assert row["contralateral_ncct_mean_hu"] == pytest.approx(42.0, abs=0.5)
    assert row["relative_density"] == pytest.approx(56 / 42, abs=0.02)


def test_no_contralateral_value_when_midline_is_unknown():
    mask, cta, ncct = symmetric_head()
    filled = ncct.with_array(np.full(ncct.shape, 35, np.int16))  # head fills the whole view
    assert math.isnan(head_midline_x(filled))
    (row,) = measure_case("x", mask, cta, filled)
    assert math.isnan(row["contralateral_ncct_mean_hu"]) and math.isnan(row["relative_density"])


def test_phantom_measurements_match_its_truth(phantom_cohort):
    from clotseg.io.layouts import discover

    with open(phantom_cohort / "truth.csv", newline="") as fh:
        truth = {r["case_id"]: r for r in csv.DictReader(fh)}
    checked = 0
    for case in discover(phantom_cohort).cases[:5]:
        vols = case.load()
        rows = measure_case(case.case_id, vols.mask, vols.cta, vols.ncct)
        t = truth[case.case_id]
        if t["has_clot"] != "True":
            assert rows[0]["n_components"] == 0
            continue
        checked += 1
        assert sum(r["volume_mm3"] for r in rows) == pytest.approx(float(t["volume_mm3"]),
                                                                   rel=1e-4)
        # Length against the drawn clot's centreline (the truth is continuous, ours is
        # measured on the voxel mask).
        assert sum(r["length_mm"] for r in rows) == pytest.approx(float(t["length_mm"]),
                                                                  rel=0.08, abs=0.5)
        if len(rows) == 1:
            assert rows[0]["perviousness_hu"] == pytest.approx(float(t["perviousness_hu"]),
                                                               abs=1e-3)
    assert checked >= 2
