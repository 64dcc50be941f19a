"""The phantom: deterministic, drawn in patient space, HU and shapes as published."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from clotseg.synth import LABELS, case_seed, make_case, plan_case
from clotseg.synth.phantom import _noise_sigma, render_case
from tests.synth import restored_grid


@pytest.fixture(scope="module")
def cases():
    """Eight small cases with a clot and two without."""
    return ([make_case(case_seed(7, k), clot=True) for k in range(8)]
            + [make_case(case_seed(7, k), clot=False) for k in (8, 9)])


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b, c = make_case(11), make_case(11), make_case(12)
    for name in ("cta", "ncct", "clot"):
        va, vb = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(va.array, vb.array)
        assert va.grid == vb.grid
    assert a.truth == b.truth
    assert a.cta.grid != c.cta.grid or not np.array_equal(a.cta.array, c.cta.array)


def test_case_seed_depends_on_seed_and_index_only():
    seeds = {case_seed(3, k) for k in range(200)}
    assert len(seeds) == 200
    assert case_seed(3, 5) == case_seed(3, 5) != case_seed(4, 5)


def test_registered_grids_equal_mask_binary_int_hu(cases):
    for c in cases:
        assert c.ncct.grid.same_as(c.cta.grid) and c.clot.grid.same_as(c.cta.grid)
        assert c.clot.array.dtype == np.uint8 and set(np.unique(c.clot.array)) <= {0, 1}
        assert c.cta.array.dtype == np.int16 and c.ncct.array.dtype == np.int16
        assert c.truth["registered"] and c.truth["ncct_motion"] is None


def test_sizes_and_spacing_ranges():
    for size, (n_inplane, n_slices) in {"small": (96, 48), "medium": (160, 80)}.items():
        c = make_case(3, size)
        g = c.cta.grid
        ax = g.axial_axis()
        inplane = [g.shape[a] for a in range(3) if a != ax]
        assert all(abs(n - n_inplane) <= 4 for n in inplane) and g.shape[ax] == n_slices
        sp = np.asarray(g.spacing)
        assert 0.4 <= sp[[a for a in range(3) if a != ax]].min() <= 1.0
        assert 0.5 <= sp[ax] <= 2.5


def test_orientations_vary_and_are_not_trivial():
    grids = [plan_case(case_seed(1, k)).grid for k in range(24)]
    dirs = [np.round(g.direction_matrix, 6) for g in grids]
    assert sum(not np.allclose(d, np.eye(3)) for d in dirs) >= 16
    assert any(g.axial_axis() != 2 for g in grids)  # some are not stored slice-last
    assert any(np.linalg.det(d) < 0 for d in dirs)  # some are flipped (left-handed)
    assert any(np.abs(d).max(axis=0).min() < 0.999 for d in dirs)  # some are oblique
    assert len({tuple(np.round(g.origin, 3)) for g in grids}) == 24


def test_anatomy_is_drawn_in_patient_space():
    """Rendering the same patient on a re-stored grid (axes permuted and flipped, same
    voxel centres) gives the same labels and mask after undoing the storage change."""
    plan = plan_case(21, clot=True)
    a = render_case(plan)
    perm, flip = (2, 0, 1), (True, False, True)
    b = render_case(dataclasses.replace(plan, grid=restored_grid(plan.grid, perm, flip)))
    back = np.transpose(a.labels.array, perm)[::-1, :, ::-1]
    assert np.mean(back == b.labels.array) > 0.999
    m_back = np.transpose(a.clot.array, perm)[::-1, :, ::-1]
    assert abs(int(m_back.sum()) - int(b.clot.array.sum())) <= 2
    assert (m_back & b.clot.array).sum() >= m_back.sum() - 2


def test_mask_lies_inside_the_clot_vessel_lumen():
    for seed in (2, 5, 31):
        plan = plan_case(seed, clot=True)
        case = render_case(plan)
        idx = np.argwhere(case.clot.array > 0)
        assert len(idx) > 20
        # Voxel centres -> anatomy frame -> distance to the clot segment's centreline.
        pts = (case.cta.grid.index_to_physical(idx) - plan.centre) @ plan.pose
        segs = {c["segment"] for c in plan.clots}
        inside = np.zeros(len(pts), bool)
        for name in segs:
            i = plan.tree.index(name)
            d, nn = cKDTree(plan.tree.points[i]).query(pts)
            inside |= d <= plan.tree.radius[i][nn] + 1e-3
        assert inside.all()
        assert set(np.unique(case.labels.array[case.clot.array > 0])) == {LABELS["clot"]}
        _, n_comp = ndimage.label(case.clot.array, np.ones((3, 3, 3)))
        assert n_comp == case.truth["n_fragments"]


def test_clot_is_a_dark_defect_on_cta_and_hyperdense_on_ncct(cases):
    defects, hyper = [], []
    for c in cases:
        if not c.truth["has_clot"]:
            continue
        m = c.clot.array > 0
        lab = c.labels.array
        cta, ncct = c.cta.array.astype(float), c.ncct.array.astype(float)
        lumen = lab == LABELS["lumen"]
        defects.append(np.median(cta[lumen]) - cta[m].mean())
        if not c.truth["faint"]:
            hyper.append(ncct[m].mean() - np.median(ncct[lumen]))
        assert 20 < c.truth["cta_mean_hu"] < 140  # dark compared with a 150–460 HU lumen
    assert min(defects) > 70
    assert np.mean(hyper) > 3  # hyperdense on average, despite partial volume


def test_clot_free_cases_have_empty_masks(cases):
    for c in cases[-2:]:
        assert c.clot.array.sum() == 0
        t = c.truth
        assert not t["has_clot"] and t["location"] == "none" and t["volume_mm3"] == 0
        assert t["n_fragments"] == 0 and np.isnan(t["perviousness_hu"])


def test_population_matches_published_mix():
    """Clot-free share, location mix, length and fragments over many drawn plans."""
    plans = [plan_case(case_seed(5, k)) for k in range(160)]
    clots = [p.clots for p in plans if p.clots]
    assert 0.07 < 1 - len(clots) / len(plans) < 0.25  # ≈ 15 % clot-free
    locs = [c[0]["location"] for c in clots]
    share = {loc: locs.count(loc) / len(locs) for loc in ("M1", "ICA", "M2")}
    assert 0.48 < share["M1"] < 0.72 and 0.12 < share["ICA"] < 0.33 and 0.07 < share["M2"] < 0.26
    lengths = [c[0]["end"] - c[0]["start"] for c in clots]
    assert 9 < np.median(lengths) < 20  # median 16.1 mm before clipping to the vessel
    hu = np.array([c[0]["ncct_hu"] for c in clots])
    assert 50 < hu.mean() < 58 and 5 < hu.std() < 11  # ≈ 54 ± 8 HU
    assert 0.03 < np.mean(hu < 48) < 0.3  # faint clots without a hyperdense sign
    delta = np.median([c[0]["delta_hu"] for c in clots])
    assert 9 < delta < 16  # perviousness median ≈ 12.5 HU
    assert 1 <= sum(len(c) > 1 for c in clots) <= 25  # ≈ 7 % two fragments


def test_tissue_hu_ranges(cases):
    for c in cases:
        cta, ncct, lab = c.cta.array.astype(float), c.ncct.array.astype(float), c.labels.array
        brain = (lab == 0) & (ncct > -100) & (ncct < 100)
        assert 18 < np.median(ncct[brain]) < 45  # grey 37–45, white 20–30, CSF 0–15
        bone = ndimage.binary_erosion(lab == LABELS["bone"], iterations=2)
        if bone.sum() > 50:
            assert 650 < np.median(ncct[bone]) < 1900
        lumen = lab == LABELS["lumen"]
        assert 140 < np.median(cta[lumen]) < 480  # contrast lumen 150–460 HU
        calc = lab == LABELS["calcification"]
        if calc.any():  # bright in both modalities
            assert ncct[calc].mean() > 100 and cta[calc].mean() > 100
    assert any((c.labels.array == LABELS["calcification"]).any() for c in cases)
    assert any(c.ncct.array.min() < -500 for c in cases)  # sphenoid sinus air in view


def test_noise_follows_slice_thickness(cases):
    from clotseg.io.volume import Grid

    def sigma(thick):
        return _noise_sigma(Grid((4, 4, 4), (0.5, 0.5, thick), (0, 0, 0), tuple(np.eye(3).ravel())))

    assert sigma(5.0) == pytest.approx(4.0) and 11 < sigma(0.6) < 12
    for c in cases[:4]:
        # Same anatomy in both scans: their difference in brain tissue is noise only.
        lab, ncct, cta = c.labels.array, c.ncct.array.astype(float), c.cta.array.astype(float)
        brain = ndimage.binary_erosion((lab == 0) & (ncct > 15) & (ncct < 60), iterations=2)
        measured = np.std((ncct - cta)[brain]) / np.sqrt(2)
        assert measured == pytest.approx(c.truth["noise_sigma_hu"], rel=0.25)


def test_truth_volume_is_voxel_count_times_voxel_volume(cases):
    for c in cases:
        t = c.truth
        assert t["volume_mm3"] == pytest.approx(c.clot.array.sum() * c.cta.voxel_volume)
        assert t["spacing"] == c.cta.spacing
        if t["has_clot"]:
            m = c.clot.array > 0
            assert t["perviousness_hu"] == pytest.approx(
                c.cta.array[m].mean() - c.ncct.array[m].mean())
            assert t["location"] in ("ICA", "M1", "M2", "other") and t["length_mm"] >= 3.0


def test_unregistered_ncct_is_moved_by_the_recorded_transform():
    import SimpleITK as sitk

    a = make_case(21, registered=True)
    b = make_case(21, registered=False)
    np.testing.assert_array_equal(a.cta.array, b.cta.array)
    np.testing.assert_array_equal(a.clot.array, b.clot.array)
    assert not b.ncct.grid.same_as(b.cta.grid)
    motion = b.truth["ncct_motion"]
    assert 0 < motion["angle_deg"] <= 3 and np.linalg.norm(motion["translation_mm"]) <= 2
    # Resampling the moved NCCT with the recorded transform recovers the aligned NCCT.
    m = np.asarray(motion["cta_to_ncct"])
    tr = sitk.AffineTransform(m[:3, :3].ravel().tolist(), m[:3, 3].tolist())
    ref = a.ncct.to_sitk()
    moving = sitk.Cast(b.ncct.to_sitk(), sitk.sitkFloat32)
    def resample(transform):
        return sitk.GetArrayFromImage(sitk.Resample(moving, ref, transform, sitk.sitkLinear,
                                                    -2000.0))

    ok, bad = resample(tr), resample(sitk.Transform())
    target = sitk.GetArrayFromImage(sitk.Cast(ref, sitk.sitkFloat32))
    inside = ndimage.binary_erosion((ok > -2000) & (bad > -2000), iterations=3)

    def err(x):  # smoothed, so that the two scans' independent noise does not dominate
        smooth = [ndimage.gaussian_filter(np.clip(v, -200, 1000), 1.5) for v in (x, target)]
        return np.abs(smooth[0] - smooth[1])[inside].mean()

    assert err(ok) < 6.0 and err(ok) < 0.6 * err(bad)
