"""Thick-slice NCCT in the phantom: a share of the cohort gets an NCCT reconstructed at 2.5
or 5 mm slices (slab-averaged, on its own grid, same direction), recorded in truth.csv,
and ``preprocess_case`` puts it back onto the CTA grid in line with the clot."""

from __future__ import annotations

import copy
import csv
import warnings

import numpy as np
import pytest
from scipy import ndimage

from clotseg.cli import main
from clotseg.io import read_volume
from clotseg.io.readers import write_volume
from clotseg.preprocess.pipeline import preprocess_case
from clotseg.preprocess.resample import as_sitk_transform, resample_to_grid
from clotseg.synth import case_seed, large, make_case, phantom, plan_case, write_cohort
from clotseg.synth.cohort import THICK_NCCT_MM, ncct_thickness_for
from clotseg.synth.phantom import LABELS, render_case
from clotseg.synth.shift import SHIFTED, SHIFTS, apply_shift


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _centre(grid) -> np.ndarray:
    return grid.index_to_physical((np.asarray(grid.shape) - 1) / 2.0)[0]


def test_share_draws_are_per_case_nested_and_of_clinical_thickness():
    seeds = [case_seed(0, k) for k in range(3000)]
    at = {share: [ncct_thickness_for(s, share) for s in seeds] for share in (0.0, 0.3, 0.6, 1.0)}
    assert all(t is None for t in at[0.0]) and all(t is not None for t in at[1.0])
    thick = [t for t in at[0.3] if t is not None]
    assert len(thick) / len(seeds) == pytest.approx(0.3, abs=0.03)
    assert set(thick) == set(THICK_NCCT_MM)
    assert thick.count(5.0) / len(thick) == pytest.approx(0.7, abs=0.05)
    # A case thick at one share is thick (same slices) at any larger share.
    assert all(b == a for a, b in zip(at[0.3], at[0.6]) if a is not None)
    assert SHIFTS["standard"].thick_ncct_share == 0.0 and SHIFTED.thick_ncct_share == 0.3


@pytest.mark.parametrize("registered", [True, False])
def test_cohort_writes_thick_ncct_on_its_own_grid(tmp_path, registered):
    truth = write_cohort(tmp_path, 2, seed=5, registered=registered, progress=False,
                         thick_ncct=1.0)
    for row in _rows(truth):
        folder = tmp_path / row["case_id"]
        cta, ncct = read_volume(folder / "cta.nii.gz"), read_volume(folder / "ncct.nii.gz")
        want = ncct_thickness_for(int(row["seed"]), 1.0)
        thin = make_case(int(row["seed"]), registered=registered).ncct.grid  # share 0
        ax = thin.axial_axis()
        assert ncct.grid.axial_axis() == ax
        assert ncct.spacing[ax] == pytest.approx(want, abs=1e-4)
        assert float(row["ncct_thickness_mm"]) == pytest.approx(want, abs=1e-4)
        # Same direction and in-plane spacing as the NCCT would have had, same centre,
        # the same length along the slices (to within one thick slice).
        np.testing.assert_allclose(ncct.direction_matrix, thin.direction_matrix, atol=1e-6)
        assert np.allclose(np.delete(ncct.spacing, ax), np.delete(thin.spacing, ax), atol=1e-4)
        assert np.allclose(_centre(ncct.grid), _centre(thin), atol=1e-3)
        assert abs(ncct.shape[ax] * want - thin.shape[ax] * thin.spacing[ax]) <= want
        assert not ncct.grid.same_as(cta.grid)


def test_default_training_cohort_keeps_thin_ncct(phantom_cohort):
    for row in _rows(phantom_cohort / "truth.csv"):
        cta = read_volume(phantom_cohort / row["case_id"] / "cta.nii.gz")
        ncct = read_volume(phantom_cohort / row["case_id"] / "ncct.nii.gz")
        assert ncct.grid.same_as(cta.grid)
        assert float(row["ncct_thickness_mm"]) == pytest.approx(
            cta.spacing[cta.grid.axial_axis()], abs=1e-4)


def test_thick_slice_is_the_mean_of_the_thin_slices_it_covers():
    """Each written thick slice has the mean of the noise-free thin sub-slices it covers
    (noise and blur average out over a slice) and is not one sub-slice picked out."""
    seed, thickness = 8, 5.0
    plan = plan_case(seed, clot=True)
    case = render_case(plan, ncct_thickness_mm=thickness)
    grid = large.thick_grid(plan.grid, thickness)
    assert case.ncct.grid.same_as(grid)
    thin, k = large.subslice_grid(grid)
    _, thin_hu, _, _ = phantom._render(plan, thin, np.eye(4), plan.imaging["streaks"][:2],
                                       ncct_only=True)
    ax = grid.axial_axis()
    slabs = np.moveaxis(thin_hu, ax, 0).reshape(grid.shape[ax], k, -1)
    thick = np.moveaxis(np.asarray(case.ncct.array, np.float64), ax, 0).reshape(
        grid.shape[ax], -1)
    np.testing.assert_allclose(thick.mean(1), slabs.mean((1, 2)), atol=0.5)
    # Voxel by voxel the slab mean is closer than the middle sub-slice (subsampling).
    inside = slice(1, -1)  # the end slices mix with air at the blur's edge
    err_mean = np.abs(thick - slabs.mean(1))[inside].mean()
    err_pick = np.abs(thick - slabs[:, k // 2])[inside].mean()
    assert err_mean < 0.5 * err_pick


def _isodense(plan):
    """The same plan with the clot at blood density on NCCT (no hyperdense sign)."""
    other = copy.deepcopy(plan)
    for v in other.values:
        v["ncct"][v["label"] == LABELS["clot"]] = plan.flow["blood"]
    return other


@pytest.mark.parametrize(("seed", "thickness", "registered", "shifted"),
                         [(5, 5.0, True, False), (13, 2.5, False, False),
                          (11, 5.0, True, True)])
def test_preprocess_puts_thick_ncct_on_the_cta_grid_in_line_with_the_clot(
        tmp_path, seed, thickness, registered, shifted):
    """The clot's hyperdensity — the thick NCCT minus the same scan with an isodense clot
    (same noise) — lands on the true clot mask once preprocess_case has registered and
    resampled the NCCT onto the CTA grid."""
    plan = plan_case(seed, clot=True)
    if shifted:  # oblique, another spacing, another scanner
        apply_shift(plan, SHIFTED, np.random.default_rng(seed))
    case = render_case(plan, registered=registered, ncct_thickness_mm=thickness)
    flat = render_case(_isodense(plan), registered=registered, ncct_thickness_mm=thickness)
    for name in ("cta", "ncct", "clot"):
        write_volume(getattr(case, name), tmp_path / f"{name}.nii.gz", mask=name == "clot")
    cta, ncct = read_volume(tmp_path / "cta.nii.gz"), read_volume(tmp_path / "ncct.nii.gz")
    clot = read_volume(tmp_path / "clot.nii.gz")
    assert ncct.spacing[ncct.grid.axial_axis()] == pytest.approx(thickness)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. partial NCCT coverage of a small ROI
        pp = preprocess_case(cta, ncct, clot)
    g, gc = pp.ncct.grid, pp.cta.grid
    assert (g.shape, g.spacing, g.origin, g.direction) == (gc.shape, gc.spacing, gc.origin,
                                                           gc.direction)
    transform = pp.info["registration"]["transform"]
    sign = case.ncct.with_array(np.asarray(case.ncct.array, np.float32)
                                - np.asarray(flat.ncct.array, np.float32))
    hyper = np.clip(resample_to_grid(sign, g, transform=transform).array, 0, None)
    mask = np.asarray(pp.mask.array) > 0
    centre = g.index_to_physical(np.argwhere(mask).mean(0))[0]
    seen = g.index_to_physical((np.argwhere(hyper > 0) * hyper[hyper > 0][:, None]).sum(0)
                               / hyper.sum())[0]
    assert np.linalg.norm(seen - centre) < thickness  # within one thick slice
    near = ndimage.binary_dilation(mask, iterations=2)
    assert near[np.unravel_index(np.argmax(hyper), hyper.shape)]
    # The registration found the true relation (identity, or the recorded motion).
    true = np.eye(4) if registered else np.asarray(case.truth["ncct_motion"]["cta_to_ncct"])
    found = np.asarray(as_sitk_transform(transform).TransformPoint(tuple(map(float, centre))))
    assert np.linalg.norm(found - (true[:3, :3] @ centre + true[:3, 3])) < 2.0


def test_cli_thick_ncct_share(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", str(out), "--cases", "1", "--seed", "5", "--thick-ncct", "1",
                 "--no-progress"]) == 0
    row = _rows(out / "truth.csv")[0]
    ncct = read_volume(out / "synth_000" / "ncct.nii.gz")
    assert ncct.spacing[ncct.grid.axial_axis()] == pytest.approx(
        float(row["ncct_thickness_mm"])) and float(row["ncct_thickness_mm"]) in THICK_NCCT_MM
    capsys.readouterr()
    for bad in ("1.5", "-0.1", "nan"):
        assert main(["synth", str(tmp_path / "e"), "--thick-ncct", bad]) == 2
        assert "--thick-ncct" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "e"), "--size", "clinical", "--thick-ncct",
                 "0.3"]) == 2
    assert "always has a thick" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
