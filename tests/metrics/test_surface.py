"""Dice, HD95, ASSD and surface Dice agree with MONAI on random anisotropic 3D blobs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from clotseg.metrics import surface
from clotseg.metrics.overlap import dice
from clotseg.metrics.surface import assd, hd95, surface_dice, surface_distances, surface_metrics

SHAPE = (28, 24, 14)


def blob(rng: np.random.Generator, shape=SHAPE, fraction: float = 0.1) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return field > np.quantile(field, 1 - fraction)


def pair(seed: int):
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in rng.uniform(0.3, 2.5, 3))
    ref = blob(rng)
    pred = blob(rng) | (ref & (rng.random(SHAPE) < 0.6))
    return pred, ref, spacing


def monai_values(pred: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    torch = pytest.importorskip("torch")
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    p = torch.from_numpy(pred)[None, None].float()
    r = torch.from_numpy(ref)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(p, r, include_background=True)),
            "hd95": float(compute_hausdorff_distance(p, r, include_background=True,
                                                     percentile=95, spacing=spacing)),
            "assd": float(compute_average_surface_distance(p, r, include_background=True,
                                                           symmetric=True, spacing=spacing)),
            "sdice": float(compute_surface_dice(p, r, class_thresholds=[1.0],
                                                include_background=True, spacing=spacing)),
        }


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_monai(seed):
    pred, ref, spacing = pair(seed)
    expected = monai_values(pred, ref, spacing)
    assert 0.2 < expected["dice"] < 0.9 and expected["hd95"] > 1.0  # a non-trivial case
    assert dice(pred, ref) == pytest.approx(expected["dice"], abs=1e-4)
    assert hd95(pred, ref, spacing) == pytest.approx(expected["hd95"], abs=1e-4)
    assert assd(pred, ref, spacing) == pytest.approx(expected["assd"], abs=1e-4)
    assert surface_dice(pred, ref, spacing, 1.0) == pytest.approx(expected["sdice"], abs=1e-4)


def test_mask_touching_the_array_border_agrees_with_monai():
    pred, ref, spacing = pair(7)
    pred[0], ref[:, -1] = True, True  # whole faces of the array
    expected = monai_values(pred, ref, spacing)
    got = surface_metrics(pred, ref, spacing)
    assert got["hd95_mm"] == pytest.approx(expected["hd95"], abs=1e-4)
    assert got["assd_mm"] == pytest.approx(expected["assd"], abs=1e-4)
    assert got["surface_dice"] == pytest.approx(expected["sdice"], abs=1e-4)


def test_kdtree_path_equals_distance_transform_path(monkeypatch):
    pred, ref, spacing = pair(11)
    pred[-2:, -2:, -2:] = True  # a far-away false positive widens the bounding box
    edt = surface_distances(pred, ref, spacing)
    monkeypatch.setattr(surface, "KDTREE_RATIO", 0.0)  # force the k-d tree
    tree = surface_distances(pred, ref, spacing)
    np.testing.assert_allclose(np.sort(tree.pred_to_ref), np.sort(edt.pred_to_ref), atol=1e-9)
    np.testing.assert_allclose(np.sort(tree.ref_to_pred), np.sort(edt.ref_to_pred), atol=1e-9)


def test_known_distances_with_anisotropic_spacing():
    # Two single-voxel masks 3 slices apart along the 2.5 mm axis: every distance is 7.5 mm.
    a = np.zeros((5, 5, 9), bool)
    b = a.copy()
    a[2, 2, 2], b[2, 2, 5] = True, True
    spacing = (0.5, 0.7, 2.5)
    assert hd95(a, b, spacing) == pytest.approx(7.5)
    assert assd(a, b, spacing) == pytest.approx(7.5)
    assert surface_dice(a, b, spacing, 1.0) == 0.0
    assert surface_dice(a, b, spacing, 7.5) == 1.0
    assert dice(a, b) == 0.0


def test_identical_masks():
    _, ref, spacing = pair(3)
    assert dice(ref, ref) == 1.0
    assert surface_metrics(ref, ref, spacing) == {"hd95_mm": 0.0, "assd_mm": 0.0,
                                                  "surface_dice": 1.0}


def test_empty_masks():
    empty = np.zeros(SHAPE, bool)
    _, ref, spacing = pair(5)
    # Both empty: perfect agreement.
    assert dice(empty, empty) == 1.0
    assert surface_metrics(empty, empty, spacing) == {"hd95_mm": 0.0, "assd_mm": 0.0,
                                                      "surface_dice": 1.0}
    # Exactly one empty: Dice 0, surface Dice 0, distances undefined (NaN), both ways.
    for p, r in ((empty, ref), (ref, empty)):
        assert dice(p, r) == 0.0
        assert np.isnan(hd95(p, r, spacing)) and np.isnan(assd(p, r, spacing))
        assert surface_dice(p, r, spacing) == 0.0
    with pytest.raises(ValueError):
        surface_distances(empty, ref, spacing)
