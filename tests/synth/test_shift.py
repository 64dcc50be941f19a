"""Shifted phantom settings change what they claim, and nothing else of the patient."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.io.layouts import discover
from clotseg.synth import write_cohort
from clotseg.synth.phantom import LABELS, SIZES, make_case, plan_case
from clotseg.synth.shift import SHIFTED, ImagingShift, apply_shift, make_shifted_case

SEEDS = [11, 12, 13, 14, 15, 16]


@pytest.fixture(scope="module")
def pairs():
    return [(make_case(s), make_shifted_case(s, shift=SHIFTED)) for s in SEEDS]


def test_same_patient_and_clot(pairs):
    for std, sh in pairs:
        for key in ("has_clot", "location", "segment", "n_fragments", "length_mm", "faint"):
            assert std.truth[key] == sh.truth[key]
        assert sh.truth["shift"] == "shifted"
        if sh.truth["has_clot"]:
            assert sh.clot.array.any()  # the clot stays in view


def test_spacing_and_orientation_leave_the_training_range(pairs):
    std_inplane, std_slice = SIZES["small"]["inplane"], SIZES["small"]["slice"]
    outside = 0
    for _, sh in pairs:
        g = sh.cta.grid
        ax = g.axial_axis()
        sp = np.asarray(g.spacing)
        inplane = np.delete(sp, ax)
        assert SHIFTED.slice_mm[0] - 1e-3 <= sp[ax] <= SHIFTED.slice_mm[1] + 1e-3
        assert (inplane >= SHIFTED.inplane_mm[0] - 1e-3).all()
        assert (inplane <= SHIFTED.inplane_mm[1] + 1e-3).all()
        outside += not (std_inplane[0] <= inplane[0] <= std_inplane[1]
                        and std_slice[0] <= sp[ax] <= std_slice[1])
        # the field of view is kept: extent within a voxel or two of the standard ROI
        assert sh.cta.grid.shape == sh.clot.grid.shape == sh.ncct.grid.shape
    assert outside >= len(pairs) // 2


def test_bolus_radius_noise_and_offsets_are_applied():
    plan = plan_case(21)
    lumen_before = np.concatenate([v["cta"][v["label"] == LABELS["lumen"]]
                                   for v in plan.values])
    clot_before = [v["cta"][v["label"] == LABELS["clot"]].copy() for v in plan.values]
    radius_before = [r.copy() for r in plan.tree.radius]
    shift = ImagingShift("late", bolus=(0.25, 0.25), radius_scale=(1.2, 1.2),
                         noise_scale=(1.8, 1.8), hu_offset=(10.0, 10.0))
    drawn = apply_shift(plan, shift, np.random.default_rng(0))
    blood = plan.flow["blood"]
    lumen_after = np.concatenate([v["cta"][v["label"] == LABELS["lumen"]]
                                  for v in plan.values])
    assert lumen_after.mean() < lumen_before.mean()
    assert np.mean(lumen_after - blood) < 0.9 * np.mean(lumen_before - blood)
    for before, v in zip(clot_before, plan.values):  # the clot's HU is not the lumen's
        np.testing.assert_array_equal(before, v["cta"][v["label"] == LABELS["clot"]])
    for before, after in zip(radius_before, plan.tree.radius):
        np.testing.assert_allclose(after, before * 1.2)
    assert list(plan.imaging["noise_scale"]) == [1.8, 1.8]
    assert drawn["hu_offset"] == [10.0, 10.0]


def test_hu_offset_moves_the_images():
    base = make_shifted_case(31, shift=ImagingShift("none"))
    moved = make_shifted_case(31, shift=ImagingShift("offset", hu_offset=(12.0, 12.0)))
    d = moved.ncct.array.astype(int) - base.ncct.array.astype(int)
    assert np.median(d) == 12


def test_noise_level_changes():
    quiet = make_shifted_case(41, shift=ImagingShift("q", noise_scale=(0.6, 0.6)))
    loud = make_shifted_case(41, shift=ImagingShift("l", noise_scale=(1.8, 1.8)))
    # neighbour differences in soft tissue: 3x the noise σ, plus anatomy common to both
    def resid(v):
        a = v.ncct.array.astype(float)
        return np.std(np.diff(a, axis=0)[np.abs(a[1:] - 35) < 30])
    assert resid(loud) > 1.6 * resid(quiet)


def test_write_shifted_cohort_as_nrrd(tmp_path):
    write_cohort(tmp_path, 2, seed=3, shift="shifted", suffix=".nrrd", progress=False)
    assert (tmp_path / "synth_000" / "cta.nrrd").is_file()
    index = discover(tmp_path)
    vols = index.cases[0].load()
    assert vols.mask.grid.same_as(vols.cta.grid)
    with pytest.raises(ValueError, match="registered"):
        write_cohort(tmp_path / "x", 1, shift="shifted", registered=False, progress=False)
