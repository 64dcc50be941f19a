"""Post-processing of probability maps into clot masks, in 3D and in millimetres.

Applied on the CTA grid (after any mapping back from a preprocessed grid), so volumes are
the ones the user measures: voxel counts times the CTA's voxel volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 26-connectivity: voxels touching by a corner belong to the same clot.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 26-connected components of a binary mask."""
    return ndimage.label(mask, structure=STRUCTURE_26)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Index box (slices) of the non-zero voxels of ``mask``; None when there are none.
    Found from per-axis projections, without a list of voxels, so that work on a clot can
    be limited to its box in a 100-million-voxel scan."""
    nz = np.asarray(mask) != 0
    box = []
    for ax in range(nz.ndim):
        hits = np.flatnonzero(nz.any(axis=tuple(a for a in range(nz.ndim) if a != ax)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def component_volumes_mm3(labels: np.ndarray, n: int, spacing) -> np.ndarray:
    """Volume in mm³ of components ``1..n`` of a label image."""
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return counts * float(np.prod(np.asarray(spacing, dtype=float)))


def filter_components(mask: np.ndarray, spacing, *, min_component_mm3: float = 0.0,
                      keep_largest: bool = False) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_component_mm3`` and, with
    ``keep_largest``, all but the largest one; returns uint8."""
    mask = np.asarray(mask) > 0
    if not mask.any() or (min_component_mm3 <= 0 and not keep_largest):
        return mask.astype(np.uint8)
    labels, n = components(mask)
    sizes = component_volumes_mm3(labels, n, spacing)
    keep = sizes >= min_component_mm3
    if keep_largest and keep.any():
        keep = np.zeros_like(keep)
        keep[int(np.argmax(sizes))] = True
    lut = np.concatenate([[False], keep])
    return lut[labels].astype(np.uint8)


def postprocess(prob: np.ndarray, spacing, *, threshold: float = 0.5,
                min_component_mm3: float = 0.0, keep_largest: bool = False) -> np.ndarray:
    """Threshold (``prob >= threshold``), drop components smaller than
    ``min_component_mm3``, optionally keep the largest; returns uint8."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return filter_components(np.asarray(prob) >= threshold, spacing,
                             min_component_mm3=min_component_mm3, keep_largest=keep_largest)
