"""The ``side`` column of clots.csv and :func:`describe_clot`: left / right / midline from
the clot centroid in LPS patient coordinates against the head's midline estimated on the
CTA, whatever the storage direction (identity, left-right flipped, permuted, oblique).

Scenes: an analytic head (ellipsoid with a skull) whose midline is deliberately not at
x = 0; the phantom's own patient rendered on a grid wide enough to hold the whole head,
whose clot side is known from the drawn segment (``M1_L`` is on the left); and
region-of-interest scans that cut the head, where the midline is the arteries' mirror
plane (a pair of analytic arteries, the ``small`` phantom)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from clotseg.io.volume import Grid, Volume
from clotseg.measure.clots import CLOTS_CSV_COLUMNS, measure_case, write_clots_csv
from clotseg.measure.midline import estimate_midline, head_midline_x, vessel_midline
from clotseg.measure.side import MIDLINE_MM, describe_clot, side_of
from clotseg.synth import plan_case
from clotseg.synth.phantom import _clot_points, render_case
from tests.helpers import DIRECTIONS

HEAD_X = 7.3  # the head's midline (LPS x, mm): not the scanner's x = 0


def _grid(direction: np.ndarray, extent_mm, spacing, centre) -> Grid:
    """A grid of ``direction`` spanning ``extent_mm`` (patient x, y, z) about ``centre``."""
    d = np.asarray(direction, float)
    pat = np.argmax(np.abs(d), axis=0)  # patient axis closest to each array axis
    sp = np.asarray(spacing, float)[pat]
    shape = (np.asarray(extent_mm, float)[pat] / sp).astype(int) + 1
    origin = np.asarray(centre, float) - d @ (sp * (shape - 1) / 2)
    return Grid(tuple(int(s) for s in shape), tuple(float(s) for s in sp),
                tuple(float(v) for v in origin), tuple(float(v) for v in d.ravel()))


def head_scene(grid: Grid, clot_x: float) -> tuple[Volume, Volume, Volume]:
    """Mask, CTA and NCCT of an analytic head sampled on ``grid``: brain (30 HU) in a
    6 mm skull (1200 HU) in air, an artery along y (CTA 300) and a clot of radius 2.5 mm
    centred at (``clot_x``, 5, 0) mm (CTA 70, NCCT 58)."""
    pts = grid.index_to_physical(np.indices(grid.shape).reshape(3, -1).T).reshape(
        *grid.shape, 3)
    x, y, z = pts[..., 0] - HEAD_X, pts[..., 1], pts[..., 2]
    r = np.sqrt((x / 70) ** 2 + (y / 88) ** 2 + (z / 75) ** 2)
    head, brain = r <= 1.0, r <= 1.0 - 6.0 / 75
    artery = np.hypot(pts[..., 0] - clot_x, z) <= 1.5
    clot = np.sqrt((pts[..., 0] - clot_x) ** 2 + (y - 5) ** 2 + z**2) <= 2.5
    base = np.where(brain, 30, np.where(head, 1200, -1000))
    cta = np.where(clot, 70, np.where(artery & brain, 300, base))
    ncct = np.where(clot, 58, np.where(artery & brain, 42, base))
    return tuple(Volume.on_grid(a.astype(t), grid) for a, t in
                 ((clot, np.uint8), (cta, np.int16), (ncct, np.int16)))


def _flip_x(vol: Volume) -> Volume:
    """The same physical scene stored left-right flipped: array reversed along its
    x axis, direction column negated, origin moved to the other end."""
    g = vol.grid
    d = g.direction_matrix.copy()
    end = g.index_to_physical(np.array([g.shape[0] - 1, 0, 0], float))[0]
    d[:, 0] = -d[:, 0]
    return Volume(np.ascontiguousarray(np.asarray(vol.array)[::-1]), g.spacing,
                  tuple(end), d.ravel())


def _permute(vol: Volume, order=(2, 0, 1)) -> Volume:
    """The same physical scene with the array axes permuted (and the direction columns
    and spacing with them)."""
    g = vol.grid
    return Volume(np.ascontiguousarray(np.transpose(np.asarray(vol.array), order)),
                  tuple(g.spacing[a] for a in order), g.origin,
                  g.direction_matrix[:, list(order)].ravel())


def _measure(vols) -> list[dict]:
    mask, cta, ncct = vols
    return measure_case("c", mask, cta, ncct)


def _scene(direction: str, clot_x: float):
    grid = _grid(DIRECTIONS["identity"] if direction in ("flipped", "permuted")
                 else DIRECTIONS[direction], (190.0, 60.0, 16.0), (1.0, 1.5, 2.0),
                 (HEAD_X, 0.0, 0.0))
    vols = head_scene(grid, clot_x)
    if direction == "flipped":
        vols = tuple(_flip_x(v) for v in vols)
    elif direction == "permuted":
        vols = tuple(_permute(v) for v in vols)
    return vols


@pytest.mark.parametrize("direction", ["identity", "flipped", "permuted", "oblique"])
def test_left_clot_is_left_in_every_storage(direction):
    vols = _scene(direction, HEAD_X + 22.0)
    if direction == "flipped":
        assert vols[0].direction_matrix[0, 0] == -1.0
    (row,) = _measure(vols)
    assert row["centroid_x_mm"] == pytest.approx(HEAD_X + 22.0, abs=0.6)
    assert row["side"] == "left"
    # The patient's right, and a clot on the midline (within a few mm: e.g. basilar).
    assert _measure(_scene(direction, HEAD_X - 22.0))[0]["side"] == "right"
    assert _measure(_scene(direction, HEAD_X + 1.5))[0]["side"] == "midline"


def test_flipped_storage_is_the_same_scene():
    ident = _scene("identity", HEAD_X + 22.0)
    flipped = _scene("flipped", HEAD_X + 22.0)
    np.testing.assert_array_equal(np.asarray(ident[1].array)[::-1], flipped[1].array)
    a, b = _measure(ident)[0], _measure(flipped)[0]
    for key in ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "volume_mm3"):
        assert a[key] == pytest.approx(b[key], abs=1e-6)


def test_side_is_empty_when_the_midline_cannot_be_found(tmp_path):
    # The field of view cuts the head left and right: no midline, no guess.
    grid = _grid(np.eye(3), (100.0, 60.0, 16.0), (1.0, 1.5, 2.0), (HEAD_X + 10, 0.0, 0.0))
    mask, cta, ncct = head_scene(grid, HEAD_X + 22.0)
    rows = measure_case("cut", mask, cta, ncct)
    rows += measure_case("none", mask.with_array(np.zeros(mask.shape, np.uint8)), cta, ncct)
    assert rows[0]["side"] is None and rows[1]["side"] is None
    rows += _measure(_scene("identity", HEAD_X + 22.0))
    path = write_clots_csv(tmp_path / "clots.csv", rows)
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == CLOTS_CSV_COLUMNS and CLOTS_CSV_COLUMNS[-3:] == ["side", "qc_score", "inputs"]
    assert [r["side"] for r in table] == ["", "", "left"]
    assert describe_clot(table[0]).startswith("clot, ")
    assert describe_clot(table[1]) == "no clot"
    assert describe_clot(table[2]).startswith("left clot, ")


def test_side_of_and_describe_clot():
    assert side_of(10.0, 3.0) == "left" and side_of(-10.0, 3.0) == "right"
    assert side_of(3.0 + MIDLINE_MM, 3.0) == "midline"
    assert side_of(12.0, math.nan) is None and side_of(math.nan, 0.0) is None
    # A range of equally plausible midlines: named only when every plane agrees.
    assert side_of(30.0, (-5.0, 10.0)) == "left" and side_of(-30.0, (-5.0, 10.0)) == "right"
    assert side_of(8.0, (-5.0, 10.0)) is None and side_of(0.0, (-1.0, 1.0)) == "midline"
    row = {"component": 1, "side": "left", "length_mm": 14.2, "pervious": True}
    assert describe_clot(row) == "left clot, 14 mm long, pervious"
    text = {"component": "2", "side": "midline", "length_mm": "8.6000", "pervious": "False"}
    assert describe_clot(text) == "midline clot, 9 mm long, not pervious"
    assert describe_clot({"component": "1", "side": "", "length_mm": "nan",
                          "pervious": ""}) == "clot"


def _phantom(seed: int, direction: np.ndarray):
    """Phantom patient ``seed`` (with its clot) on a 1.5 mm grid of ``direction`` that
    holds the whole head left to right, centred on the anatomy at the clot's height."""
    plan = plan_case(seed, clot=True)
    clot = (_clot_points(plan.tree, plan.clots) @ plan.pose.T + plan.centre).mean(0)
    plan.grid = _grid(direction, (220.0, 240.0, 40.0), (1.5, 1.5, 1.5),
                      (plan.centre[0], plan.centre[1], clot[2]))
    case = render_case(plan)
    return plan, (case.clot, case.cta, case.ncct)


def test_phantom_clot_side_matches_the_drawn_segment():
    # Seed 3: a clot in the left M2 (M2a_L); seed 0: the right M1 (M1_R).
    plan, vols = _phantom(3, np.eye(3))
    assert plan.clots[0]["segment"].endswith("_L")
    views = {"identity": vols, "flipped": tuple(_flip_x(v) for v in vols),
             "permuted": tuple(_permute(v, (1, 2, 0)) for v in vols),
             "oblique": _phantom(3, DIRECTIONS["oblique"])[1]}
    for name, view in views.items():
        rows = _measure(view)
        assert rows[0]["side"] == "left", name
    plan, vols = _phantom(0, np.diag([-1.0, -1.0, 1.0]))
    assert plan.clots[0]["segment"].endswith("_R")
    assert {r["side"] for r in _measure(vols)} == {"right"}


def test_region_of_interest_phantom_gets_its_side_from_the_arteries(phantom_cohort):
    """The cohort's cases are regions around the Circle of Willis that cut the head left
    and right: the head's outline says nothing, the paired arteries' mirror plane does.
    Every side named agrees with the drawn segment (``M1_L`` is left); a case whose image
    allows planes on either side of the clot keeps it empty."""
    from clotseg.io.layouts import discover

    with open(phantom_cohort / "truth.csv", newline="") as fh:
        truth = {r["case_id"]: r for r in csv.DictReader(fh)}
    named = 0
    for case in discover(phantom_cohort).cases:
        vols = case.load()
        rows = measure_case(case.case_id, vols.mask, vols.cta, vols.ncct)
        if truth[case.case_id]["has_clot"] != "True":
            continue
        want = {"L": "left", "R": "right"}[truth[case.case_id]["segment"][-1]]
        assert rows[0]["side"] in (want, None), case.case_id
        named += rows[0]["side"] == want
    assert named >= 4


def test_arteries_mirror_plane_in_a_cut_field_of_view():
    """A region-of-interest scan (head cut left and right) with a pair of arteries mirrored
    about the head's midline: the side comes from their mirror plane in every storage
    direction; one artery alone (its own mirror image) gives no midline."""
    grid = _grid(np.eye(3), (80.0, 60.0, 16.0), (0.8, 0.8, 1.0), (HEAD_X + 6.0, 0.0, 0.0))
    pts = grid.index_to_physical(np.indices(grid.shape).reshape(3, -1).T).reshape(
        *grid.shape, 3)
    x, y, z = pts[..., 0] - HEAD_X, pts[..., 1], pts[..., 2]
    pair = ((np.hypot(np.abs(x) - 14.0, z) <= 1.5) & (y < 10)) | (
        (np.hypot(np.abs(x) - 24.0, z - 4.0) <= 1.2) & (np.abs(y - 12) < 6))
    clot = np.sqrt((x - 14.0) ** 2 + (y + 5) ** 2 + z**2) <= 2.0  # in the left artery
    cta = np.where(clot, 70, np.where(pair, 320, 35)).astype(np.int16)
    vols = tuple(Volume.on_grid(a, grid) for a in (clot.astype(np.uint8), cta, cta))
    views = {"identity": vols, "flipped": tuple(_flip_x(v) for v in vols),
             "permuted": tuple(_permute(v) for v in vols)}
    for name, view in views.items():
        assert math.isnan(head_midline_x(view[1])), name  # no head outline here
        midline = estimate_midline(view[1], view[1])
        assert midline.source == "vessels", name
        assert midline.low - 1.0 <= HEAD_X <= midline.high + 1.0, (name, midline)
        (row,) = _measure(view)
        assert row["side"] == "left", name
        # The clot (radius 2 mm) mirrored across that plane lands on the right artery
        # (radius 1.5 mm, 320 HU; tissue 35 HU around it): mostly artery.
        assert 200.0 < row["contralateral_ncct_mean_hu"] <= 320.0, name
    one = np.where(clot, 70, np.where(pair & (x > 0), 320, 35)).astype(np.int16)
    alone = Volume.on_grid(one, grid)
    assert not vessel_midline(alone).known
    assert measure_case("one", vols[0], alone, alone)[0]["side"] is None
