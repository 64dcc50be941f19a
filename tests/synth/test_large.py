"""Clinical-size phantoms: the whole-head grid, thick NCCT slices, and the coarse + fine
renderer that makes 512 × 512 × 300 volumes affordable (checked against the direct render
on a small grid, where both can run)."""

from __future__ import annotations

import numpy as np

from clotseg.synth import large, make_case, plan_case
from clotseg.synth.phantom import render_case


def test_clinical_grid_is_a_whole_head_axial_scan():
    for seed in range(6):
        plan = plan_case(seed, "clinical")
        g = plan.grid
        ax = g.axial_axis()
        assert ax == 2  # stored as axial slices, as scanners do
        assert g.shape[0] == g.shape[1] == 512 and 280 <= g.shape[2] <= 400
        assert 0.40 <= g.spacing[0] == g.spacing[1] <= 0.50
        assert 0.5 <= g.spacing[2] <= 0.625
        # The head (vertex ≈ 110 mm above the circle, skull base ≈ 36 mm below) is inside.
        top = plan.pose @ np.array([0.0, 6.0, 100.0]) + plan.centre
        base = plan.pose @ np.array([0.0, 0.0, -45.0]) + plan.centre
        idx = g.physical_to_index(np.stack([top, base]))
        assert np.all(idx >= 0) and np.all(idx <= np.asarray(g.shape) - 1)
        assert 2.5 <= plan.imaging["ncct_thickness_mm"] <= 5.0


def test_thick_ncct_on_its_own_grid_covers_the_cta():
    c = make_case(5, "small", ncct_thickness_mm=3.0, clot=True)
    cg, ng = c.cta.grid, c.ncct.grid
    ax = cg.axial_axis()
    assert ng.axial_axis() == ax and ng.spacing[ax] == 3.0
    assert np.allclose(np.delete(ng.spacing, ax), np.delete(cg.spacing, ax))
    assert abs(ng.shape[ax] * 3.0 - cg.shape[ax] * cg.spacing[ax]) <= 3.0
    centre = lambda g: g.index_to_physical((np.asarray(g.shape) - 1) / 2.0)[0]  # noqa: E731
    assert np.allclose(centre(ng), centre(cg), atol=1e-3)
    assert c.ncct.array.dtype == np.int16 and c.truth["ncct_thickness_mm"] == 3.0
    # Same CTA, mask and truth volume as the thin-slice case.
    thin = make_case(5, "small", clot=True)
    np.testing.assert_array_equal(thin.cta.array, c.cta.array)
    np.testing.assert_array_equal(thin.clot.array, c.clot.array)
    # A thick slice is the mean of the thin anatomy: blood in the NCCT stays ≈ 40 HU at the
    # brain's level while the skull is still dense bone.
    arr = np.asarray(c.ncct.array)
    assert arr.max() > 700 and arr.min() >= -1024


def test_slab_average_and_subslices_are_consistent():
    thin = np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)
    out = large.slab_average(thin, 2, 4)
    np.testing.assert_allclose(out[..., 0], thin[..., :4].mean(-1))
    g = plan_case(1, "small").grid
    thick = large.thick_grid(g, 2.5)
    sub, k = large.subslice_grid(thick)
    ax = thick.axial_axis()
    assert sub.shape[ax] == k * thick.shape[ax] and sub.spacing[ax] <= large.SUBSLICE_MM
    # The mean position of each thick slice's sub-slices is the thick slice's centre.
    pts = sub.index_to_physical(np.stack([np.eye(3)[ax] * i for i in range(k)]))
    assert np.allclose(pts.mean(0), thick.index_to_physical(np.zeros(3))[0], atol=1e-6)


def test_upsampling_is_exact_on_coarse_samples_and_linear_between():
    coarse = np.random.default_rng(0).normal(size=(6, 5, 6)).astype(np.float32)
    f, shape = (3, 2, 1), (13, 7, 6)
    up = large.upsample_linear(coarse, f, shape)
    np.testing.assert_allclose(up[::3, ::2, :], coarse[:5, :4, :6], atol=1e-6)
    step = (coarse[1, 0, 0] - coarse[0, 0, 0]) / 3
    np.testing.assert_allclose(up[1, 0, 0], coarse[0, 0, 0] + step, atol=1e-6)
    lab = large.upsample_nearest(np.arange(6, dtype=np.uint8)[:, None, None], (3, 1, 1),
                                 (13, 1, 1))
    assert lab[:, 0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]


def test_coarse_plus_fine_render_matches_the_direct_render(monkeypatch):
    """On a medium grid the two-resolution render keeps the clot mask and the tissue
    values of the direct render (they differ only by the smoothing of the coarse part)."""
    plan = plan_case(4, "medium", clot=True)
    direct = render_case(plan)
    monkeypatch.setattr(large, "LARGE_VOXELS", 1000)
    two = render_case(plan)
    a, b = np.asarray(direct.clot.array) > 0, np.asarray(two.clot.array) > 0
    assert a.sum() > 0 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.98
    assert direct.cta.grid == two.cta.grid
    diff = np.abs(direct.cta.array.astype(float) - two.cta.array.astype(float))
    assert np.median(diff) < 25  # noise is ≈ 12 HU per image; edges differ most
    vol = direct.truth["volume_mm3"]
    assert abs(vol - two.truth["volume_mm3"]) < 0.05 * vol
