"""Geometry of binary 3D masks: 26-connected components, their sizes, bounding boxes.

A clot is a 26-connected component of a mask: voxels touching by a face, an edge or a
corner belong to the same clot. Post-processing (:mod:`clotseg.inference.postprocess`),
the false-positive filter and tuning (:mod:`clotseg.inference.fp_filter`,
:mod:`clotseg.training.tuning`), metrics (:mod:`clotseg.metrics.detection`) and
measurements (:mod:`clotseg.measure.clots`, :mod:`clotseg.measure.patient`) must agree on
what one clot is, so they all take it from here. This module depends on numpy and scipy
only, so that any layer of the package may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: 26-connectivity: voxels touching by a corner belong to the same clot.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of a binary mask.

    Args:
        mask: boolean (or 0/1) 3D array.

    Returns:
        ``(labels, n)``: components numbered ``1..n`` in scan order, 0 for background.

    Examples:
        >>> m = np.zeros((5, 5, 5), bool); m[0, 0, 0] = m[1, 1, 1] = m[4, 4, 4] = True
        >>> components(m)[1]
        2
    """
    return ndimage.label(mask, structure=STRUCTURE_26)


def component_labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of ``mask`` (non-zero voxels) numbered 1..n, largest
    first (equal sizes in scan order): the numbering of ``clots.csv``'s ``component``,
    also used for ``predict --labels`` masks.

    Args:
        mask: 3D array; any non-zero voxel is foreground.

    Returns:
        ``(labels, n)`` with component 1 the largest.

    Examples:
        >>> m = np.zeros((6, 1, 1), np.uint8); m[0] = 1; m[2:5] = 1
        >>> component_labels(m)[0].ravel().tolist()
        [2, 0, 1, 1, 1, 0]
    """
    labels, n = components(np.asarray(mask) > 0)
    if n < 2:
        return labels, n
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    rank = np.empty(n + 1, dtype=labels.dtype)
    rank[0] = 0
    rank[np.argsort(-counts, kind="stable") + 1] = np.arange(1, n + 1)
    return rank[labels], n


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Index box (slices) of the non-zero voxels of ``mask``; None when there are none.

    Found from per-axis projections, without a list of voxels, so that work on a clot can
    be limited to its box in a 100-million-voxel scan.

    Args:
        mask: array of any dimension.

    Examples:
        >>> m = np.zeros((4, 4, 4)); m[1, 2, 3] = 1
        >>> bounding_box(m)
        (slice(1, 2, None), slice(2, 3, None), slice(3, 4, None))
    """
    nz = np.asarray(mask) != 0
    box = []
    for ax in range(nz.ndim):
        hits = np.flatnonzero(nz.any(axis=tuple(a for a in range(nz.ndim) if a != ax)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def component_volumes_mm3(labels: np.ndarray, n: int, spacing: Sequence[float]) -> np.ndarray:
    """Volume in mm³ of components ``1..n`` of a label image.

    Args:
        labels: label image, as :func:`components` returns it.
        n: number of components.
        spacing: voxel size in mm, per axis.

    Examples:
        >>> component_volumes_mm3(np.array([[[1, 1, 0, 2]]]), 2, (0.5, 1, 2)).tolist()
        [2.0, 1.0]
    """
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return counts * float(np.prod(np.asarray(spacing, dtype=float)))


def filter_components(mask: np.ndarray, spacing: Sequence[float], *,
                      min_component_mm3: float = 0.0, keep_largest: bool = False) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_component_mm3`` and, with
    ``keep_largest``, all but the largest one; returns uint8.

    Args:
        mask: binary 3D array (any non-zero voxel is foreground).
        spacing: voxel size in mm, per axis.
        min_component_mm3: smallest component volume kept.
        keep_largest: keep only the largest of the components left.

    Examples:
        >>> m = np.zeros((5, 1, 1), bool); m[0] = True; m[2:5] = True
        >>> filter_components(m, (1, 1, 1), min_component_mm3=2).ravel().tolist()
        [0, 0, 1, 1, 1]
    """
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
