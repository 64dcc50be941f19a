"""Splits, slabs, the memory-mapped cache, batch sources and augmentation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from clotseg.config import AugmentConfig
from clotseg.data.augment import (
    augment_batch,
    gaussian_blur,
    isodense_clot,
    low_resolution,
    spatial_matrices,
    thick_slice_radius,
    thick_slice_weights,
)
from clotseg.data.cache import CachedCase, build_cache, cache_view, with_ncct_hu, with_views
from clotseg.data.dataset import (
    BatchFactory,
    MemmapSource,
    ResidentSource,
    SliceSampler,
    batch_iterator,
    batch_seed,
    canvas_size,
    reach,
)
from clotseg.data.slabs import (
    DEFAULT_WINDOWS,
    VIEWS,
    from_view,
    pad_to_multiple,
    prepare_case,
    slab,
)
from clotseg.data.splits import clot_strata, load_splits, make_splits, save_splits
from clotseg.errors import ClotsegError
from clotseg.io.layouts import discover

IDS = [f"p{i:02d}" for i in range(23)]
WINDOWS = {k: list(v) for k, v in DEFAULT_WINDOWS.items()}


@pytest.mark.parametrize("fold", range(5))
def test_kfold_splits_are_patient_level_and_deterministic(fold):
    s = make_splits(IDS, scheme="kfold", n_folds=5, fold=fold, seed=3)
    sets = [set(s[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set.union(*sets) == set(IDS)
    assert s == make_splits(IDS, scheme="kfold", n_folds=5, fold=fold, seed=3)
    assert s["test"] == make_splits(IDS, scheme="kfold", n_folds=5, fold=0, seed=3)["test"]
    assert len(s["test"]) == round(0.2 * len(IDS))
    assert s["test"] != make_splits(IDS, scheme="kfold", n_folds=5, fold=fold, seed=4)["test"]


def test_folds_cover_every_non_test_case_once():
    vals = [v for k in range(5) for v in make_splits(IDS, n_folds=5, fold=k)["val"]]
    test = make_splits(IDS)["test"]
    assert sorted(vals) == sorted(set(IDS) - set(test))


def test_random_split_60_20_20(tmp_path):
    s = make_splits([f"CS{i}" for i in range(1, 21)], scheme="random", seed=1)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (12, 4, 4)
    assert s["scheme"] == "random" and s["seed"] == 1
    save_splits(tmp_path / "s.json", s)
    assert load_splits(tmp_path / "s.json") == s
    bad = dict(s, val=s["val"] + [s["train"][0]])
    save_splits(tmp_path / "bad.json", bad)
    with pytest.raises(ClotsegError, match="more than one split"):
        load_splits(tmp_path / "bad.json")
    with pytest.raises(ClotsegError, match="not in the dataset"):
        load_splits(tmp_path / "s.json", known=s["train"])


FEW_FREE = {c: ("clot-free" if i % 10 == 3 else "clot") for i, c in enumerate(
    f"q{i:02d}" for i in range(50))}  # 5 clot-free patients of 50


def test_stratified_validation_fold_gets_a_clot_free_patient_when_they_are_rare():
    ids = [f"r{i:02d}" for i in range(60)]
    strata = {c: ("clot-free" if i in (7, 20, 27, 37) else "clot") for i, c in enumerate(ids)}
    for seed in range(5):  # 4 clot-free of 60, 5 folds, no test set: fold 0 must get one
        s = make_splits(ids, n_folds=5, fold=0, test_fraction=0.0, seed=seed, strata=strata)
        assert sum(strata[c] == "clot-free" for c in s["val"]) == 1
        assert len(s["val"]) == 12


@pytest.mark.parametrize("seed", range(4))
def test_stratified_split_shares_clot_free_patients_out_in_proportion(seed):
    free = {c for c, g in FEW_FREE.items() if g == "clot-free"}
    folds = [make_splits(list(FEW_FREE), n_folds=4, fold=k, seed=seed, strata=FEW_FREE)
             for k in range(4)]
    assert all(f["test"] == folds[0]["test"] for f in folds)
    assert len(free & set(folds[0]["test"])) == 1  # 20 % of 5
    per_fold = [len(free & set(f["val"])) for f in folds]
    assert per_fold == [1, 1, 1, 1]  # the 4 left, one per fold, never 0 in a validation set
    assert sorted(v for f in folds for v in f["val"]) == sorted(set(FEW_FREE) - set(folds[0]["test"]))
    assert max(len(f["val"]) for f in folds) - min(len(f["val"]) for f in folds) <= 1
    assert folds[0]["stratified_by"] == {"clot": 45, "clot-free": 5}
    s = make_splits(list(FEW_FREE), scheme="random", seed=seed, strata=FEW_FREE)
    assert [len(free & set(s[k])) for k in ("train", "val", "test")] == [3, 1, 1]


def test_stratified_split_of_one_group_is_the_plain_split():
    one = {c: "clot" for c in IDS}
    for scheme in ("kfold", "random"):
        plain = make_splits(IDS, scheme=scheme, seed=7)
        strat = make_splits(IDS, scheme=scheme, seed=7, strata=one)
        assert {k: strat[k] for k in ("train", "val", "test")} == \
            {k: plain[k] for k in ("train", "val", "test")}
    with pytest.raises(ClotsegError, match="no stratum"):
        make_splits(IDS, strata={c: "clot" for c in IDS[1:]})


def test_strata_come_from_the_masks_on_disk(phantom_cohort):
    with (phantom_cohort / "truth.csv").open() as f:
        truth = {r["case_id"]: r["has_clot"] for r in csv.DictReader(f)}
    cases = discover(phantom_cohort).cases
    strata = clot_strata(cases)
    assert strata == {c: ("clot" if truth[c] == "True" else "clot-free") for c in truth}
    assert set(strata.values()) == {"clot", "clot-free"}  # the fixture has both kinds


def test_strata_refuse_a_mask_that_is_not_binary(tmp_path):
    import SimpleITK as sitk

    from clotseg.synth import write_cohort

    write_cohort(tmp_path / "one", 1, seed=5, size="small", progress=False)
    src = discover(tmp_path / "one").cases[0]
    bad = tmp_path / "bad_mask.nii.gz"
    img = sitk.ReadImage(str(src.mask))
    sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32) * 0.5, str(bad))
    ref = type(src)(src.case_id, src.cta, src.ncct, bad)
    with pytest.raises(ClotsegError, match="bad_mask.nii.gz"):
        clot_strata([ref])
    no_mask = type(src)(src.case_id, src.cta, src.ncct, None)
    assert clot_strata([no_mask]) == {src.case_id: "no mask"}


def test_slab_channel_order_and_edges():
    img = np.zeros((2, 4, 5, 6), np.float32)
    img[0] = np.arange(6)  # CTA value = slice index
    img[1] = 10 + np.arange(6)
    s = slab(img, 0, 3)
    assert s.shape == (6, 4, 5)
    assert [float(c[0, 0]) for c in s] == [0, 0, 1, 10, 10, 11]  # edge slice repeated


def test_padding_is_zero_not_garbage():
    x = np.ones((3, 37, 45), np.float32)
    p, crop = pad_to_multiple(x, 16)
    assert p.shape == (3, 48, 48)
    assert p.sum() == x.sum()
    np.testing.assert_array_equal(p[:, crop[0], crop[1]], x)


@pytest.fixture(scope="module")
def cached(phantom_cohort, tmp_path_factory):
    index = discover(phantom_cohort)
    cache = tmp_path_factory.mktemp("cache")
    return index, cache, build_cache(index.cases[:4], cache, WINDOWS, progress=False)


def test_cache_is_memory_mapped_and_matches_prepare_case(cached):
    index, cache, cases = cached
    case = cases[0]
    assert isinstance(case.slices, np.memmap) and isinstance(case.mask_slices, np.memmap)
    vols = index.cases[0].load()
    prep = prepare_case(case.case_id, vols.cta, vols.ncct, vols.mask, DEFAULT_WINDOWS)
    np.testing.assert_allclose(case.image, prep.image, atol=1e-3)  # float16 storage
    np.testing.assert_array_equal(case.mask, prep.mask)
    z = int(case.clot_slices[0]) if len(case.clot_slices) else 0
    np.testing.assert_allclose(slab(case.image, z, 3), slab(prep.image, z, 3), atol=1e-3)
    for z, x0, x1, y0, y1 in case.clot_boxes:
        m = prep.mask[:, :, z]
        assert m[x0:x1, y0:y1].sum() == m.sum() > 0
    # a second build reuses the entry (same file, not rewritten)
    mtime = (cache / f"{case.case_id}.image.npy").stat().st_mtime_ns
    again = build_cache(index.cases[:1], cache, WINDOWS, progress=False)[0]
    assert (cache / f"{case.case_id}.image.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.slices, case.slices)


@pytest.mark.parametrize("view", ["coronal", "sagittal"])
def test_a_cached_view_is_the_same_case_sliced_across_another_axis(cached, view):
    index, cache, cases = cached
    case = next(c for c in cases if len(c.clot_boxes))
    other = cache_view(case, view, cache)
    assert other.case_id == case.case_id and isinstance(other.slices, np.memmap)
    # the view's canonical-order volume is the case's volume, voxel for voxel
    np.testing.assert_array_equal(from_view(other.image, view), case.image)
    np.testing.assert_array_equal(from_view(other.mask, view), case.mask)
    assert other.spacing == tuple(case.spacing[a] for a in VIEWS[view])
    assert other.depth == case.mask.shape[VIEWS[view][2]]
    # clot boxes and hard-negative points are those of the view's slices
    m = np.asarray(other.mask_slices)
    assert len(other.clot_boxes) == int(m.reshape(len(m), -1).any(axis=1).sum())
    for z, x0, x1, y0, y1 in other.clot_boxes:
        assert m[z, x0:x1, y0:y1].sum() == m[z].sum() > 0
    z, x, y = case.hard_points.T
    axial_values = case.slices[z, :, x, y]
    z, x, y = other.hard_points.T
    np.testing.assert_array_equal(other.slices[z, :, x, y], axial_values)
    assert len(axial_values) > 100 and np.ptp(axial_values[:, 0]) > 0.1  # varied points
    # reused while the axial entry is unchanged, rebuilt when it changes
    base = cache / f"{case.case_id}.{view}.image.npy"
    mtime = base.stat().st_mtime_ns
    assert cache_view(case, view, cache).depth == other.depth
    assert base.stat().st_mtime_ns == mtime
    meta_path = cache / f"{case.case_id}.json"
    meta = json.loads(meta_path.read_text())
    try:
        meta_path.write_text(json.dumps({**meta, "key": "changed"}))
        cache_view(case, view, cache)
        assert base.stat().st_mtime_ns != mtime
    finally:
        meta_path.write_text(json.dumps(meta))
    assert cache_view(case, "axial", cache) is case
    assert [c.depth for c in with_views(cases[:2], ["axial", view], cache)] == \
        [c.depth for c in cases[:2]] + [cache_view(c, view, cache).depth for c in cases[:2]]


def test_misaligned_mask_is_a_clear_error(phantom_cohort, tmp_path):
    from clotseg.io.readers import read_volume, write_volume
    from clotseg.io.volume import Volume

    src = discover(phantom_cohort).cases[0]
    case = tmp_path / "data" / "bad_case"
    for name in ("cta", "ncct"):
        write_volume(read_volume(src.files[name]), case / f"{name}.nii.gz")
    mask = read_volume(src.files["mask"])
    moved = Volume(mask.array[1:], mask.spacing, mask.origin, mask.direction)  # not CTA grid
    write_volume(moved, case / "clot.nii.gz", mask=True)
    with pytest.raises(ClotsegError, match=r"mask grid differs.*clotseg preprocess.*clot\.nii"):
        build_cache(discover(tmp_path / "data").cases, tmp_path / "cache", WINDOWS, False)


def test_sampler_oversamples_clot_slices(cached):
    cases = cached[2]
    sampler = SliceSampler(cases, 0.5, patch=32)
    picks, centres = sampler.draw(400, torch.Generator().manual_seed(0))
    has_clot = np.array([cases[c].mask_slices[z].any() for c, z in picks])
    assert has_clot[200:].all()  # the clot half: every slice has clot
    assert has_clot.mean() > 0.45
    plain = SliceSampler(cases, 0.0).draw(400, torch.Generator().manual_seed(0))[0]
    assert np.array([cases[c].mask_slices[z].any() for c, z in plain]).mean() < 0.3
    # clot crop centres lie within a patch of the clot
    for (c, z), ctr in zip(picks[200:], centres[200:]):
        xs, ys = np.nonzero(cases[c].mask_slices[z])
        assert np.min(np.abs(xs - ctr[0])) <= 16 and np.min(np.abs(ys - ctr[1])) <= 16


def test_sampler_draws_the_mined_share_around_mined_points(cached):
    cases = cached[2]
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = SliceSampler(cases, 0.25, patch=32)
    sampler = SliceSampler(cases, 0.25, patch=32, mined_fraction=0.5)
    # no pool yet: the mined share is drawn anywhere, exactly as without mining
    for a, b in zip(plain.draw(64, gen()), sampler.draw(64, gen())):
        np.testing.assert_array_equal(a, b)
    point = np.array([[3, 10, 12]])
    sampler.set_mined(1, point)
    picks, centres = sampler.draw(64, gen())
    mined = slice(64 - 16 - 32, 64 - 16)  # any, then mined, then the clot share
    assert (picks[mined] == [1, 3]).all()
    assert (np.abs(centres[mined] - [10, 12]) <= 8).all()  # jitter: a quarter patch
    sampler.set_mined(1, np.zeros((0, 3)))  # the network no longer errs there
    assert len(sampler.mined) == 0
    np.testing.assert_array_equal(sampler.draw(64, gen())[0], plain.draw(64, gen())[0])


def test_clot_sampling_by_clot_draws_each_cases_clot_alike(cached):
    """``data.clot_sampling="clot"``: the clot-centred draws spread evenly over the cases
    with a clot, whatever their clot's length in slices; "slice" follows the slices."""
    cases = cached[2]
    with_clot = [i for i, c in enumerate(cases) if len(c.clot_boxes)]
    lengths = np.array([len(cases[i].clot_boxes) for i in with_clot], dtype=float)
    assert lengths.max() > 1.5 * lengths.min()  # the cohort's clots differ in length
    n = 8000
    for mode, expected in (("slice", lengths / lengths.sum()),
                           ("clot", np.full(len(with_clot), 1 / len(with_clot)))):
        sampler = SliceSampler(cases, 1.0, patch=32, clot_sampling=mode)
        picks, _ = sampler.draw(n, torch.Generator().manual_seed(3))
        assert all(cases[c].mask_slices[z].any() for c, z in picks[:200])
        share = np.array([(picks[:, 0] == i).mean() for i in with_clot])
        np.testing.assert_allclose(share, expected, atol=0.03)
    with pytest.raises(ValueError, match="clot_sampling"):
        SliceSampler(cases, 0.5, clot_sampling="voxel")


def test_hard_negative_points_lie_on_vessels_and_dense_spots_outside_the_clot(cached):
    from clotseg.data.cache import HARD_NEGATIVE_HU

    cases = cached[2]
    for case in cases:
        pts = case.hard_points
        assert len(pts) > 100  # a phantom head has vessels and dense spots
        z, x, y = pts.T
        assert not case.mask_slices[z, x, y].any()  # never on the clot
        hu = {name: case.slices[z, ch, x, y].astype(float) * (w[1] - w[0]) + w[0]
              for ch, (name, w) in enumerate(WINDOWS.items())}
        lumen = (hu["cta"] >= HARD_NEGATIVE_HU["cta"][0] - 1) & (
            hu["cta"] <= HARD_NEGATIVE_HU["cta"][1] + 1)
        dense = (hu["ncct"] >= HARD_NEGATIVE_HU["ncct"][0] - 1) & (
            hu["ncct"] <= HARD_NEGATIVE_HU["ncct"][1] + 1)
        assert (lumen | dense).all()
        assert lumen.sum() > 10 and (dense & ~lumen).sum() > 10  # both pools


def test_hard_negative_lumen_pool_leaves_out_what_the_window_saturates():
    """With a CTA window that ends below the top of the lumen range (300 < 600 HU), a
    saturated voxel may be bone or calcification: only lumen the window still shows counts;
    dense NCCT spots count only where the CTA shows no lumen."""
    from clotseg.data.cache import hard_negative_points

    windows = {"cta": [-20.0, 300.0], "ncct": [0.0, 100.0]}
    hu_cta = np.full((1, 8, 8), 30.0)
    hu_cta[0, 1, 1] = 200.0  # lumen the window shows
    hu_cta[0, 2, 2] = 1200.0  # bone: saturated
    hu_cta[0, 5, 5] = 250.0  # lumen over dense NCCT: a lumen point, not a dense one
    hu_ncct = np.full((1, 8, 8), 30.0)
    hu_ncct[0, 4, 4] = 70.0  # dense spot without lumen
    hu_ncct[0, 5, 5] = 70.0
    slices = np.stack([(hu_cta + 20) / 320, hu_ncct / 100], axis=1).clip(0, 1)
    pts = hard_negative_points(slices.astype(np.float32), np.zeros((1, 8, 8), np.uint8),
                               windows, "case")
    assert sorted(map(tuple, pts[:, 1:].tolist())) == [(1, 1), (4, 4), (5, 5)]


def test_sampler_centres_its_hard_share_near_hard_points(cached):
    cases = cached[2]
    sampler = SliceSampler(cases, 0.5, patch=32, hard_fraction=0.25)
    picks, centres = sampler.draw(400, torch.Generator().manual_seed(0))
    hard = picks[100:200], centres[100:200]  # batch order: anywhere, hard, clot
    for (c, z), ctr in zip(*hard):
        pts = cases[c].hard_points
        on_slice = pts[pts[:, 0] == z, 1:]
        assert len(on_slice) and np.abs(on_slice - ctr).max(axis=1).min() <= 8  # jitter
    # a crop around a vessel sees far more lumen than a crop anywhere in the head
    def lumen_share(sel_picks, sel_centres):
        shares = []
        for (c, z), (cx, cy) in zip(sel_picks, sel_centres):
            lo, hi = WINDOWS["cta"]
            s = np.asarray(cases[c].slices[z, 0], float) * (hi - lo) + lo
            x0, y0 = int(max(cx - 16, 0)), int(max(cy - 16, 0))
            shares.append((s[x0:x0 + 32, y0:y0 + 32] > 150).mean())
        return np.mean(shares)
    assert lumen_share(*hard) > 2 * lumen_share(picks[:100], centres[:100])
    assert SliceSampler(cases, 0.8, 32, hard_fraction=0.5).hard_fraction == pytest.approx(0.2)


def test_resident_and_memmap_sources_and_workers_give_identical_batches(cached):
    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    aug = AugmentConfig()
    sampler = SliceSampler(cases, 0.5, 32)
    a = BatchFactory(MemmapSource(cases, 3, canvas), sampler, 6, 32, aug)
    b = BatchFactory(ResidentSource(cases, 3, canvas, "cpu"), sampler, 6, 32, aug)
    seeds = [batch_seed(0, 0, 0, s) for s in range(3)]
    for s in seeds:
        (xa, ya), (xb, yb) = a.make(s), b.make(s)
        assert xa.shape == (6, 6, 32, 32) and ya.shape == (6, 1, 32, 32)
        torch.testing.assert_close(xa, xb, atol=1e-3, rtol=0)
        assert torch.equal(ya, yb)
        assert ya[3:].flatten(1).amax(1).min() == 1  # clot half of the batch sees clot
    loaded = list(batch_iterator(a, seeds, workers=2))
    for s, (x, y) in zip(seeds, loaded):
        x0, y0 = a.make(s)
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_windowed_gather_is_the_canvas_window_and_reaches_what_augmentation_samples(cached):
    """A window read from the memory-mapped cache equals the same window of the padded
    canvas (zeros past the canvas and the case), and :func:`reach` covers every pixel the
    warp of an augmented crop samples, so crops from windows equal crops from the canvas."""
    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    src = MemmapSource(cases, 3, canvas)
    picks = np.array([[0, 5], [1, 9], [2, 0], [0, 20]])
    origins = np.array([[-7, -9], [10, 12], [canvas[0] - 20, canvas[1] - 5], [3, -40]])
    full_x, full_y = src.gather(picks)
    pad = 60
    fx = torch.nn.functional.pad(full_x, (pad, pad, pad, pad))
    fy = torch.nn.functional.pad(full_y, (pad, pad, pad, pad))
    x, y = src.gather(picks, origins, (48, 48))
    assert x.shape == (4, 6, 48, 48) and y.shape == (4, 1, 48, 48)
    for b, (r, c) in enumerate(origins + pad):
        assert torch.equal(x[b], fx[b, :, r:r + 48, c:c + 48])
        assert torch.equal(y[b], fy[b, :, r:r + 48, c:c + 48])
    assert x[2].abs().sum() > 0 and x[3].abs().sum() > 0  # the windows do hold the case
    # the farthest point an augmented crop can sample stays inside its window
    cfg = AugmentConfig()
    side = reach(32, cfg)
    corners = torch.tensor([[15.5, 15.5], [15.5, -15.5], [-15.5, 15.5], [-15.5, -15.5]],
                           dtype=torch.float64)  # the crop's corners from its centre
    mats = spatial_matrices(4000, AugmentConfig(spatial_prob=1.0, scale=cfg.scale),
                            torch.Generator().manual_seed(0))
    farthest = (mats[:, None] @ corners[None, :, :, None]).abs().max() + 1  # + bilinear
    assert farthest <= (side - 1) / 2 and side % 2 == 0 and side < 64
    assert reach(32, AugmentConfig(enabled=False)) == 36  # no warp: the crop and a margin


def test_page_cache_warm_up_reads_the_cohort_once_or_skips_when_too_big(cached,
                                                                         monkeypatch):
    from clotseg.data import cache as cache_mod

    cases = cached[2]
    opened = []
    real_open = cache_mod.os.open
    monkeypatch.setattr(cache_mod.os, "open",
                        lambda path, flags: opened.append(str(path)) or real_open(path, flags))
    thread = cache_mod.warm_page_cache(cases)
    assert thread is not None
    thread.join(timeout=60)
    assert not thread.is_alive()
    expected = {str(c.slices.filename) for c in cases} | {str(c.mask_slices.filename)
                                                          for c in cases}
    assert set(opened) == expected  # every image and mask file, nothing else
    assert cache_mod.warm_page_cache(cases, share=1e-12) is None  # would not fit: skipped
    monkeypatch.setattr(cache_mod, "_available_bytes", lambda: None)
    assert cache_mod.warm_page_cache(cases) is None  # unknown memory: skipped


def test_unaugmented_crop_is_exact(cached):
    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    src = MemmapSource(cases, 1, canvas)
    factory = BatchFactory(src, SliceSampler(cases, 1.0, 32), 4, 32, None)
    x, y = factory.make(7)
    picks, _ = SliceSampler(cases, 1.0, 32).draw(4, torch.Generator().manual_seed(7))
    full_x, full_y = src.gather(picks)
    for b in range(4):  # the crop is a window of the full slice, found by exact matching
        win = full_y[b, 0].unfold(0, 32, 1).unfold(1, 32, 1)
        hits = (win == y[b, 0]).flatten(2).all(-1).nonzero()
        assert len(hits), b
        r, c = hits[0].tolist()
        assert torch.equal(full_x[b, :, r:r + 32, c:c + 32], x[b])


def test_training_cta_projections_are_what_predict_feeds(cached):
    """With ``data.cta_mip`` a training sample (unaugmented, on the canvas or cropped from
    a window) holds the very input predict builds for that slice, from either source."""
    from tests.inference.test_engine import projected_slab

    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    sampler = SliceSampler(cases, 1.0, 32)
    picks, _ = sampler.draw(4, torch.Generator().manual_seed(7))
    for src in (MemmapSource(cases, 3, canvas), ResidentSource(cases, 3, canvas, "cpu")):
        x, _ = BatchFactory(src, sampler, 4, 0, None, cta_mip=4).make(7)
        for b, (ci, z) in enumerate(picks):
            (top, left), (h, w) = src.offsets[ci], cases[ci].plane
            ref = projected_slab(np.asarray(cases[ci].image, np.float32), int(z), 3, 4)
            torch.testing.assert_close(x[b, :, top:top + h, left:left + w],
                                       torch.from_numpy(ref), atol=0, rtol=0)
        plain, _ = BatchFactory(src, sampler, 4, 0, None).make(7)
        kept = [1, 3, 4, 5]  # CTA centre slice and the NCCT slab; CTA 0 and 2 projected
        assert torch.equal(plain[:, kept], x[:, kept]) and not torch.equal(plain, x)
    src = MemmapSource(cases, 3, canvas)  # a windowed crop is a window of that input
    x, y = BatchFactory(src, sampler, 4, 32, None, cta_mip=4).make(7)
    full_x, full_y = BatchFactory(src, sampler, 4, 0, None, cta_mip=4).make(7)
    for b in range(4):
        win = full_y[b, 0].unfold(0, 32, 1).unfold(1, 32, 1)
        r, c = (win == y[b, 0]).flatten(2).all(-1).nonzero()[0].tolist()
        assert torch.equal(full_x[b, :, r:r + 32, c:c + 32], x[b])


def test_mirrored_training_crops_are_windows_of_the_whole_slice_mirrored(cached):
    """``model.mirror``: a training sample carries each modality beside its mirror about
    the slice's centre (as predict's whole-slice pass mirrors it), not about the crop's
    centre, from either source."""
    from clotseg.models.mirror import with_mirror

    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    sampler = SliceSampler(cases, 1.0, 32)
    for src in (MemmapSource(cases, 3, canvas), ResidentSource(cases, 3, canvas, "cpu")):
        plain, plain_y = BatchFactory(src, sampler, 4, 0, None).make(7)
        full, full_y = BatchFactory(src, sampler, 4, 0, None, mirror=True).make(7)
        assert full.shape == (4, 12, *canvas) and torch.equal(full_y, plain_y)
        assert torch.equal(full, with_mirror(plain))
        assert torch.equal(full[:, 3:6], plain[:, 0:3].flip(2))  # CTA slab, mirrored
        assert not torch.equal(full[:, 3:6], plain[:, 0:3])
        x, y = BatchFactory(src, sampler, 4, 32, None, mirror=True).make(7)
        assert x.shape == (4, 12, 32, 32)
        for b in range(4):
            win = full_y[b, 0].unfold(0, 32, 1).unfold(1, 32, 1)
            r, c = (win == y[b, 0]).flatten(2).all(-1).nonzero()[0].tolist()
            assert torch.equal(full[b, :, r:r + 32, c:c + 32], x[b])
            assert not torch.equal(x[b, 3:6], x[b, 0:3].flip(1))  # not the crop's mirror


def test_augmentation_keeps_image_and_mask_aligned():
    x = torch.zeros(8, 6, 64, 64)
    y = torch.zeros(8, 1, 64, 64)
    x[:, :, 20:34, 12:30] = 1.0  # a bright rectangle, off-centre, in every channel
    y[:, :, 20:34, 12:30] = 1.0
    cfg = AugmentConfig(spatial_prob=1.0, flip=0.5, intensity_prob=0.0, blur_prob=0.0,
                        noise_prob=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(ya, y)  # something moved
    for b in range(8):
        assert not torch.equal(ya[b], y[b])
        for c in range(6):
            bright = xa[b, c] > 0.5
            m = ya[b, 0] > 0.5
            iou = (bright & m).sum() / (bright | m).sum()
            assert iou > 0.9, (b, c, float(iou))
    assert set(torch.unique(ya).tolist()) <= {0.0, 1.0}


def test_augmentation_with_crop_follows_the_centre():
    x = torch.zeros(4, 2, 96, 96)
    y = torch.zeros(4, 1, 96, 96)
    x[:, :, 60:70, 10:20] = 1.0
    y[:, :, 60:70, 10:20] = 1.0
    centres = torch.tensor([[64.5, 14.5]] * 4, dtype=torch.float64)
    cfg = AugmentConfig(spatial_prob=1.0, intensity_prob=0.0, blur_prob=0.0, noise_prob=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0), centres=centres,
                           out_size=(32, 32))
    assert xa.shape == (4, 2, 32, 32)
    for b in range(4):  # the square sits at the crop's centre, aligned with its mask
        cy, cx = torch.nonzero(ya[b, 0]).float().mean(0).tolist()
        assert abs(cy - 15.5) < 2 and abs(cx - 15.5) < 2
        bright = xa[b, 0] > 0.5
        iou = (bright & (ya[b, 0] > 0.5)).sum() / (bright | (ya[b, 0] > 0.5)).sum()
        assert iou > 0.85


def test_intensity_augmentation_leaves_mask_alone():
    x = torch.rand(4, 2, 32, 32)
    y = (torch.rand(4, 1, 32, 32) > 0.9).float()
    cfg = AugmentConfig(spatial_prob=0.0, flip=0.0, intensity_prob=1.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ya, y) and not torch.equal(xa, x)
    off = AugmentConfig(enabled=False)
    xb, yb = augment_batch(x, y, off, torch.Generator().manual_seed(0))
    assert torch.equal(xb, x) and torch.equal(yb, y)


def test_blur_per_sample_sigma():
    x = torch.zeros(3, 2, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = gaussian_blur(x, torch.tensor([0.0, 0.6, 1.2]))
    assert torch.allclose(out[0], x[0])  # sigma 0: unchanged
    torch.testing.assert_close(out.sum(dim=(2, 3)), x.sum(dim=(2, 3)))  # mass kept
    assert out[1, 0, 10, 10] > out[2, 0, 10, 10] > 0  # wider sigma, lower peak


def test_hu_augmentations_are_in_hounsfield_units_per_modality():
    """The same HU offset / noise σ is a 8x larger step in the NCCT's 100 HU window than in
    the CTA's 800 HU window; without the windows the HU settings do nothing."""
    x = torch.full((64, 6, 16, 16), 0.5)
    y = torch.zeros(64, 1, 16, 16)
    cfg = AugmentConfig(spatial_prob=0.0, flip=0.0, intensity_prob=1.0, brightness=0.0,
                        contrast=0.0, gamma=[1.0, 1.0], blur_prob=0.0, noise_prob=0.0,
                        lowres_prob=0.0, hu_shift=20.0, noise_hu=0.0)
    xa, _ = augment_batch(x, y, cfg, torch.Generator().manual_seed(0), hu_per_unit=(800, 100))
    shift = (xa - 0.5).mean(dim=(2, 3))  # (B, 6): constant per modality within a sample
    cta, ncct = shift[:, :3], shift[:, 3:]
    assert cta.abs().max() <= 20 / 800 + 1e-6 and ncct.abs().max() <= 20 / 100 + 1e-6
    assert ncct.abs().max() > 4 * cta.abs().max()
    noisy = AugmentConfig(**{**cfg.__dict__, "hu_shift": 0.0, "noise_prob": 1.0,
                             "noise_hu": 15.0, "noise_std": 0.0})
    xn, _ = augment_batch(x, y, noisy, torch.Generator().manual_seed(1), hu_per_unit=(800, 100))
    sd = xn.std(dim=(2, 3))
    assert sd[:, 3:].mean() > 5 * sd[:, :3].mean()
    xo, _ = augment_batch(x, y, noisy, torch.Generator().manual_seed(1))
    assert torch.equal(xo, x)


def test_low_resolution_keeps_size_and_smooths():
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, ::2] = 1.0  # finest stripes
    out = low_resolution(x, torch.tensor([1.0, 0.5]))
    assert out.shape == x.shape and torch.equal(out[0], x[0])
    assert out[1].std() < 0.2 * x[1].std()


def test_modality_dropout_blanks_exactly_one_modality_per_sample(cached):
    # Forced dropout (probability 1): every sample has exactly one modality's slab at the
    # value predict feeds for a missing scan, the other untouched; the mask is unchanged.
    from clotseg.data.slabs import MISSING_VALUE

    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    src, sampler = MemmapSource(cases, 3, canvas), SliceSampler(cases, 0.5, 32)
    plain = BatchFactory(src, sampler, 16, 32, AugmentConfig())
    dropped = BatchFactory(src, sampler, 16, 32, AugmentConfig(), modality_dropout=1.0)
    x0, y0 = plain.make(5)
    x, y = dropped.make(5)
    assert torch.equal(y, y0)
    blank = (x == MISSING_VALUE).flatten(2).all(-1)  # (B, 6): channel entirely missing
    cta_gone, ncct_gone = blank[:, :3].all(1), blank[:, 3:].all(1)
    assert (cta_gone ^ ncct_gone).all() and cta_gone.any() and ncct_gone.any()
    for b in range(16):  # the kept modality is the augmented batch's, bit for bit
        keep = slice(3, 6) if cta_gone[b] else slice(0, 3)
        assert torch.equal(x[b, keep], x0[b, keep])
    # off (the default of the factory, the original preset): the batch is unchanged
    assert torch.equal(BatchFactory(src, sampler, 16, 32, AugmentConfig(),
                                    modality_dropout=0.0).make(5)[0], x0)


def test_thick_slice_weights_are_a_thick_reconstruction_resampled_onto_the_thin_grid():
    """Against a thick reconstruction made by hand: 1 mm slices, 3 mm thick slices whose
    edges fall on thin-slice edges (phase 0), so each thick slice is the plain mean of
    three thin ones, and the thin grid is the linear interpolation between thick centres."""
    rng = np.random.default_rng(0)
    vol = rng.normal(size=41)
    z = 20  # the slab's centre; thick centres at z + 3k
    thick = {k: vol[z + 3 * k - 1:z + 3 * k + 2].mean() for k in range(-3, 4)}
    expected = [thick[-1] / 3 + 2 * thick[0] / 3, thick[0], 2 * thick[0] / 3 + thick[1] / 3]
    radius = thick_slice_radius(3, 1.0, 3.0)
    w = thick_slice_weights(3, radius, 1.0, 3.0, 0.0)
    np.testing.assert_allclose(w @ vol[z - radius:z + radius + 1], expected, rtol=1e-12)
    # any phase and thickness: rows sum to 1, a linear ramp along z passes through (a box
    # mean and a linear interpolation of a line are the line; up to the thin slices cut
    # by a thick slice's edge, each taken as uniform over its thickness), and a single bright
    # thin slice is spread out and dimmed to at most spacing / thickness (partial volume)
    ramp = np.arange(-30, 31) * 0.7
    for thickness, phase, spacing in ((2.5, 0.3, 0.6), (5.0, 4.9, 1.05), (4.0, 2.0, 0.5)):
        r = thick_slice_radius(3, spacing, thickness)
        w = thick_slice_weights(3, r, spacing, thickness, phase)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(w @ ramp[30 - r:31 + r], ramp[29:32], rtol=0, atol=0.7 / 20)
        assert w[1, r] <= spacing / thickness + 1e-12 and (w > 0).sum(axis=1).min() >= 2


def _impulse_case(view: str = "axial") -> CachedCase:
    """A 40-slice case, 1 mm apart: the NCCT bright on slice 20 only, the CTA a ramp."""
    slices = np.zeros((40, 2, 32, 32), np.float16)
    slices[:, 0] = (np.arange(40) / 40)[:, None, None]
    slices[20, 1] = 1.0
    mask = np.zeros((40, 32, 32), np.uint8)
    mask[20, 10:14, 10:14] = 1
    boxes = np.array([[20, 10, 14, 10, 14]])
    return CachedCase("impulse", slices, mask, (0.7, 0.7, 1.0), boxes,
                      np.zeros((0, 3), np.int64), view)


@pytest.mark.parametrize("resident", [False, True])
def test_thick_ncct_augmentation_smears_the_ncct_only_along_the_slice_axis(resident):
    """With ``augment.thick_ncct_prob`` 1 every axial sample's NCCT slab is a thick
    reconstruction of its thin neighbours: a one-slice bright NCCT spot (a thin
    hyperdense clot) reaches the slices around it dimmed; the CTA and the mask are
    untouched; a case sliced across another axis is left alone; off draws nothing."""
    plain = dict(flip=0.0, spatial_prob=0.0, intensity_prob=0.0, lowres_prob=0.0,
                 blur_prob=0.0, noise_prob=0.0)
    on = AugmentConfig(thick_ncct_prob=1.0, thick_ncct_mm=[3.0, 5.0], **plain)
    for view in ("axial", "coronal"):
        cases = [_impulse_case(view)]
        canvas = canvas_size(cases, 16, 32)
        src = (ResidentSource(cases, 3, canvas, "cpu") if resident
               else MemmapSource(cases, 3, canvas))
        sampler = SliceSampler(cases, 1.0, 32)  # every sample on the clot's slice
        x0, y0 = BatchFactory(src, sampler, 8, 32, AugmentConfig(**plain)).make(3)
        x, y = BatchFactory(src, sampler, 8, 32, on).make(3)
        assert torch.equal(y, y0) and torch.equal(x[:, :3], x0[:, :3])
        if view != "axial":
            assert torch.equal(x, x0)
            continue
        assert torch.equal(x0[:, 4].amax(dim=(1, 2)), torch.ones(8))  # thin: full value
        peak = x[:, 3:].amax(dim=(2, 3))  # (B, 3 slab slices)
        assert (peak <= 1.0 / 3.0 + 1e-3).all()  # at most spacing / thickness of it
        assert (peak > 0).sum(dim=1).min() >= 2  # and in more than its own slice
        assert (peak.sum(dim=1) - peak.sum(dim=1)[0]).abs().max() > 1e-3  # random phases
    off = AugmentConfig(thick_ncct_prob=0.0, **plain)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    factory = BatchFactory(MemmapSource(cases, 3, canvas), sampler, 8, 32, off)
    factory.reslice(torch.zeros(8, 6, 32, 32), np.zeros((8, 2), np.int64), off, gen_a)
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


def test_z_blur_augmentation_blurs_both_modalities_across_slices():
    """``augment.z_blur_prob`` 1: a one-slice bright spot in both scans reaches the
    neighbouring slices of the slab in both, dimmed (the blur of a scanner with a wider
    slice profile); with thick NCCT as well, the NCCT gets both and is dimmer still."""
    plain = dict(flip=0.0, spatial_prob=0.0, intensity_prob=0.0, lowres_prob=0.0,
                 blur_prob=0.0, noise_prob=0.0)
    case = _impulse_case()
    case.slices[:, 0] = 0.0
    case.slices[20, 0] = 1.0
    cases = [case]
    canvas = canvas_size(cases, 16, 32)
    src, sampler = MemmapSource(cases, 3, canvas), SliceSampler(cases, 1.0, 32)
    blur = AugmentConfig(z_blur_prob=1.0, z_blur_mm=[1.0, 1.2], **plain)
    x, y = BatchFactory(src, sampler, 8, 32, blur).make(3)
    x0, y0 = BatchFactory(src, sampler, 8, 32, AugmentConfig(**plain)).make(3)
    assert torch.equal(y, y0)
    for m in (0, 1):
        peak = x[:, 3 * m:3 * m + 3].amax(dim=(2, 3))  # (B, slab)
        assert (peak[:, 1] < 0.5).all() and (peak[:, 0] > 0.1).all() and (peak[:, 2] > 0.1).all()
        torch.testing.assert_close(peak[:, 0], peak[:, 2])  # symmetric about the spot
    both = AugmentConfig(z_blur_prob=1.0, z_blur_mm=[1.0, 1.2], thick_ncct_prob=1.0, **plain)
    xb, _ = BatchFactory(src, sampler, 8, 32, both).make(3)
    assert (xb[:, 3:].amax(dim=(1, 2, 3)) < x[:, 3:].amax(dim=(1, 2, 3))).all()


def test_isodense_clot_removes_the_hyperdense_sign_and_keeps_the_texture():
    """A clot 0.3 above noisy surroundings: at strength 1 its mean is the surroundings'
    median and its pixel-to-pixel texture is kept; at 0.5 half the excess stays; slices
    without a clot, a clot darker than its surroundings and everything outside the
    masks are unchanged."""
    gen = torch.Generator().manual_seed(0)
    ncct = 0.4 + 0.02 * torch.randn(3, 2, 24, 24, generator=gen)
    masks = torch.zeros(3, 2, 24, 24)
    masks[:, 0, 8:14, 9:15] = 1
    ncct[:, 0][masks[:, 0] > 0] += 0.3
    ncct[2, 0][masks[2, 0] > 0] -= 0.6  # sample 2: a hypodense clot
    out = isodense_clot(ncct, masks, torch.tensor([1.0, 0.5, 1.0]))
    inside, band = masks[0, 0] > 0, masks[0, 0] == 0
    ring = torch.nn.functional.max_pool2d(masks[:1, 0], 5, stride=1, padding=2)[0] > 0
    for b, share in ((0, 1.0), (1, 0.5)):
        surround = ncct[b, 0][ring & band].median()
        excess = ncct[b, 0][inside].mean() - surround
        assert excess > 0.25
        torch.testing.assert_close(out[b, 0][inside].mean(), surround + (1 - share) * excess)
        torch.testing.assert_close(out[b, 0][inside] - out[b, 0][inside].mean(),
                                   ncct[b, 0][inside] - ncct[b, 0][inside].mean())
    assert torch.equal(out[:, 0][:, band], ncct[:, 0][:, band])
    assert torch.equal(out[:, 1], ncct[:, 1]) and torch.equal(out[2], ncct[2])


@pytest.mark.parametrize("resident", [False, True])
def test_isodense_augmentation_edits_the_ncct_of_each_slab_slice_under_its_own_mask(resident):
    """``augment.isodense_prob`` 1 at full strength: a clot bright on the NCCT in three
    slices, shifted from slice to slice, comes out at its surroundings' level in every
    NCCT slab slice (each under its own slice's mask, also in a cropped window); the
    CTA, the mask and the rest of the NCCT are unchanged; off draws nothing."""
    plain = dict(flip=0.0, spatial_prob=0.0, intensity_prob=0.0, lowres_prob=0.0,
                 blur_prob=0.0, noise_prob=0.0, isodense_prob=0.0)
    slices = np.zeros((40, 2, 48, 48), np.float16)
    slices[:, 0] = 0.7
    slices[:, 1] = 0.35
    mask = np.zeros((40, 48, 48), np.uint8)
    for z, r in ((19, 20), (20, 22), (21, 24)):
        mask[z, r:r + 4, 20:24] = 1
        slices[z, 1][mask[z] > 0] = 0.6
    boxes = np.array([[20, 22, 26, 20, 24]])
    cases = [CachedCase("iso", slices, mask, (0.7, 0.7, 1.0), boxes,
                        np.zeros((0, 3), np.int64), "axial")]
    canvas = canvas_size(cases, 16, 32)
    src = ResidentSource(cases, 3, canvas, "cpu") if resident else MemmapSource(cases, 3, canvas)
    sampler = SliceSampler(cases, 1.0, 32)  # every sample on slice 20, the clot's middle
    on = AugmentConfig(**{**plain, "isodense_prob": 1.0, "isodense_strength": [1.0, 1.0]})
    x0, y0 = BatchFactory(src, sampler, 6, 32, AugmentConfig(**plain)).make(4)
    x, y = BatchFactory(src, sampler, 6, 32, on).make(4)
    assert torch.equal(y, y0) and torch.equal(x[:, :3], x0[:, :3])
    bright, level = float(np.float16(0.6)), float(np.float16(0.35))  # as cached
    assert torch.equal(x0[:, 3:].amax(dim=(2, 3)), torch.full((6, 3), bright))
    torch.testing.assert_close(x[:, 3:], torch.full_like(x[:, 3:], level), atol=1e-6, rtol=0)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    factory = BatchFactory(src, sampler, 6, 32, AugmentConfig(**plain))
    factory.isodense(x0, np.zeros((6, 2), np.int64), AugmentConfig(**plain), gen_a)
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


def test_the_ncct_in_hu_is_the_cached_ncct_unclipped(cached):
    """The HU entry of a phantom case shows what the 0-100 HU window clips (skull above
    100 HU, air below 0) and agrees with the cached channel inside the window; a second
    call reuses it."""
    index, cache, cases = cached
    hu_cases = with_ncct_hu(index.cases[:2], cases[:2], cache, WINDOWS)
    hu = np.asarray(hu_cases[0].ncct_hu, dtype=np.float32)
    assert hu.shape == cases[0].mask_slices.shape and hu.max() > 300 and hu.min() < -500
    lo, hi = WINDOWS["ncct"]
    np.testing.assert_allclose(np.clip((hu - lo) / (hi - lo), 0, 1),
                               np.asarray(cases[0].slices[:, 1], dtype=np.float32), atol=2e-3)
    mtime = (cache / f"{cases[0].case_id}.ncct_hu.npy").stat().st_mtime_ns
    with_ncct_hu(index.cases[:1], cases[:1], cache, WINDOWS)
    assert (cache / f"{cases[0].case_id}.ncct_hu.npy").stat().st_mtime_ns == mtime
    (cache / f"{cases[0].case_id}.ncct_hu.npy").unlink()  # a lost array is made again
    again = with_ncct_hu(index.cases[:1], cases[:1], cache, WINDOWS)[0]
    np.testing.assert_array_equal(again.ncct_hu, hu_cases[0].ncct_hu)


@pytest.mark.parametrize("resident", [False, True])
def test_thick_ncct_is_averaged_in_hu_so_bone_bleeds_into_a_thick_slice(resident):
    """A thick slice that takes in a little bone is bright in HU: 20 slices of brain
    (30 HU) above 20 of bone (1000 HU), 1 mm apart, 5 mm thick slices. Averaged in HU the
    brain slices next to the bone come out hyperdense (above 60 HU: what a clot looks
    like); averaged on the clipped 0-100 HU channel they cannot (at most 30 + a share of
    70 HU)."""
    plain = dict(flip=0.0, spatial_prob=0.0, intensity_prob=0.0, lowres_prob=0.0,
                 blur_prob=0.0, noise_prob=0.0)
    hu = np.full((40, 32, 32), 30.0, np.float32)
    hu[20:] = 1000.0
    slices = np.zeros((40, 2, 32, 32), np.float16)
    slices[:, 1] = np.clip(hu / 100.0, 0, 1)
    mask = np.zeros((40, 32, 32), np.uint8)
    mask[17, 10:14, 10:14] = 1  # clot-centred samples on slice 17, 3 mm above the bone
    boxes = np.array([[17, 10, 14, 10, 14]])
    case = CachedCase("bone", slices, mask, (0.7, 0.7, 1.0), boxes,
                      np.zeros((0, 3), np.int64), "axial", hu.astype(np.float16))
    clipped = CachedCase(*[getattr(case, f) for f in ("case_id", "slices", "mask_slices",
                                                       "spacing", "clot_boxes",
                                                       "hard_points", "view")])
    on = AugmentConfig(thick_ncct_prob=1.0, thick_ncct_mm=[5.0, 5.0], **plain)
    peaks = []
    for c in (case, clipped):
        canvas = canvas_size([c], 16, 32)
        src = (ResidentSource([c], 3, canvas, "cpu") if resident
               else MemmapSource([c], 3, canvas))
        factory = BatchFactory(src, SliceSampler([c], 1.0, 32), 16, 32, on, WINDOWS)
        x, _ = factory.make(2)
        peaks.append(x[:, 4].amax(dim=(1, 2)) * 100)  # slice 17's NCCT, HU
    in_hu, on_window = peaks
    assert (on_window <= 30 + 70 * 0.5 + 1).all() and (in_hu > on_window + 1).all()
    assert (in_hu > 60).any()


def test_a_training_case_needs_both_scans(phantom_cohort, tmp_path):
    import shutil

    from clotseg.data.cache import cache_case

    case = discover(phantom_cohort).cases[0]
    folder = tmp_path / "data" / case.case_id
    shutil.copytree(case.cta.parent, folder)
    next(folder.glob("ncct.*")).unlink()
    one = discover(tmp_path / "data").cases[0]
    with pytest.raises(ClotsegError, match="no NCCT; a training case needs both"):
        cache_case(one, tmp_path / "cache", WINDOWS)


def test_volumetric_targets_are_every_slab_slice_and_follow_the_crop(cached):
    """A volumetric network's sample carries the clot mask of each slab slice (the centre
    one among them), cropped and warped with the images, from either source."""
    cases = cached[2]
    canvas = canvas_size(cases, 16, 32)
    sampler = SliceSampler(cases, 1.0, 32)
    aug = AugmentConfig(spatial_prob=1.0, intensity_prob=0.0, blur_prob=0.0, noise_prob=0.0,
                        lowres_prob=0.0, isodense_prob=0.0)
    for src in (MemmapSource(cases, 5, canvas), ResidentSource(cases, 5, canvas, "cpu")):
        plain_x, centre_y = BatchFactory(src, sampler, 4, 0, None).make(3)
        x, y = BatchFactory(src, sampler, 4, 0, None, volumetric=True).make(3)
        assert torch.equal(x, plain_x) and y.shape == (4, 5, *canvas)
        assert torch.equal(y[:, 2:3], centre_y)
        picks, _ = sampler.draw(4, torch.Generator().manual_seed(3))
        assert torch.equal(y, src.mask_window(picks, 2))
        # neighbouring slices differ from the centre somewhere: a clot ends along z
        assert any(not torch.equal(y[b, 0], y[b, 2]) or not torch.equal(y[b, 4], y[b, 2])
                   for b in range(4))
        # with a warped crop, every target slice moves with the images
        cx, cy = BatchFactory(src, sampler, 4, 32, aug).make(5)
        vx, vy = BatchFactory(src, sampler, 4, 32, aug, volumetric=True).make(5)
        assert torch.equal(vx, cx) and vy.shape == (4, 5, 32, 32)
        assert torch.equal(vy[:, 2:3], cy) and set(torch.unique(vy).tolist()) <= {0.0, 1.0}
