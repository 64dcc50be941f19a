"""Surface-distance metrics in millimetres, matching MONAI's definitions.

As in MONAI (``compute_hausdorff_distance``, ``compute_average_surface_distance``,
``compute_surface_dice``): the surface of a mask is its set of border voxels (voxels of the
mask with a 6-connected neighbour outside it; MONAI's ``get_mask_edges`` with
``crop=True``/erosion), distances are Euclidean between voxel centres using the spacing
(``distance_transform_edt(sampling=spacing)``), HD95 is the larger of the two directed
95th percentiles, ASSD is the mean over the union of both directed distance sets, and
surface Dice at tolerance τ is the fraction of both surfaces within τ of the other.
Empty cases: both empty → 0 distances and surface Dice 1; only one empty → NaN.
Written with scipy so no torch import is needed; tests check agreement with MONAI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _border(mask: np.ndarray) -> np.ndarray:
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1),
                                    border_value=0)
    return mask & ~eroded


def directed_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances from the border of ``a`` to the border of ``b`` and back (mm)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    ea, eb = _border(a), _border(b)
    # Crop to the joint bounding box (+1) to keep the distance transforms small.
    both = ea | eb
    sl = tuple(slice(max(s.start - 1, 0), s.stop + 1)
               for s in ndimage.find_objects(both.astype(np.int8))[0])
    ea, eb = ea[sl], eb[sl]
    dt_b = ndimage.distance_transform_edt(~eb, sampling=spacing)
    dt_a = ndimage.distance_transform_edt(~ea, sampling=spacing)
    return dt_b[ea], dt_a[eb]


def _empty_case(pred, ref):
    p, r = bool(np.any(pred)), bool(np.any(ref))
    if not p and not r:
        return 0.0
    if not p or not r:
        return float("nan")
    return None


def hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance (mm)."""
    e = _empty_case(pred, ref)
    if e is not None:
        return e
    d1, d2 = directed_distances(pred, ref, spacing)
    return float(max(np.percentile(d1, 95), np.percentile(d2, 95)))


def assd(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """Average symmetric surface distance (mm)."""
    e = _empty_case(pred, ref)
    if e is not None:
        return e
    d1, d2 = directed_distances(pred, ref, spacing)
    return float(np.concatenate([d1, d2]).mean())


def surface_dice(pred: np.ndarray, ref: np.ndarray, spacing, tolerance_mm: float = 1.0) -> float:
    """Normalised surface Dice at ``tolerance_mm``."""
    e = _empty_case(pred, ref)
    if e is not None:
        return 1.0 if e == 0.0 else 0.0
    d1, d2 = directed_distances(pred, ref, spacing)
    return float(((d1 <= tolerance_mm).sum() + (d2 <= tolerance_mm).sum()) / (len(d1) + len(d2)))
