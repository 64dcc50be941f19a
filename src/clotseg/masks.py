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
#: Components closer than this (mm, surface to surface) to the primary clot belong to it:
#: a fragmented clot's pieces lie a few millimetres apart along one vessel.
FRAGMENT_GAP_MM = 10.0


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


def primary_component(labels: np.ndarray, n: int, prob: np.ndarray | None) -> int:
    """Label (1..n) of the component that holds the most probability (the sum over its
    voxels), the larger one on a tie; the largest when ``prob`` is None.

    Why the sum and not the peak: on unseen scanners most components, specks included,
    reach a peak of 1.00, and a speck that peaks a hair higher than the clot won the
    choice. The sum weighs how sure the network is by how much of it it is sure of. On
    the saved maps of three 30-minute runs (90 unseen patients of the shifted phantom site
    each) it kept 2-3 more of the 76 clots per run than the peak, and 0-1 fewer on the
    training site (benchmarks/results/quality_30min_*_massrule_90patients.json); the
    clot-free patients are not affected (the rule only chooses which component stays).

    Args:
        labels: component labels ``1..n`` (0 background), as from :func:`components`.
        n: number of components (at least 1).
        prob: probabilities on the same grid as ``labels``, or None.

    Examples:
        >>> lab = np.array([[[1, 1, 0, 2]]]); p = np.array([[[.8, .8, 0, .99]]])
        >>> primary_component(lab, 2, p), primary_component(lab, 2, None)
        (1, 1)
        >>> primary_component(lab, 2, np.array([[[.3, .3, 0, .99]]]))
        2
    """
    ids = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(labels.shape, np.uint8), labels, ids)
    if prob is None:
        return int(ids[np.argmax(sizes)])
    mass = ndimage.sum_labels(np.asarray(prob, dtype=np.float64), labels, ids)
    return int(ids[np.lexsort((sizes, mass))[-1]])


def fragments_of(labels: np.ndarray, boxes: list, primary: int, spacing: Sequence[float],
                 gap_mm: float = FRAGMENT_GAP_MM) -> list[int]:
    """Labels of the components within ``gap_mm`` (surface to surface) of component
    ``primary``, itself first.

    The distance map is computed only in the primary's bounding box grown by ``gap_mm``
    on every side: anything outside it is farther than ``gap_mm`` along some axis.

    Args:
        labels: component labels, as from :func:`components`.
        boxes: ``scipy.ndimage.find_objects(labels)``.
        primary: the label to start from.
        spacing: voxel size in mm, per axis.
        gap_mm: largest surface-to-surface distance of a fragment.

    Examples:
        >>> m = np.zeros((30, 1, 1), bool); m[0:3] = m[8:10] = m[25:28] = True
        >>> lab, n = components(m)
        >>> fragments_of(lab, ndimage.find_objects(lab), 1, (1, 1, 1), gap_mm=10)
        [1, 2]
    """
    spacing = np.asarray(spacing, dtype=float)
    box = boxes[primary - 1]
    grow = np.ceil(gap_mm / spacing).astype(int)
    region = tuple(slice(max(s.start - g, 0), min(s.stop + g, n))
                   for s, g, n in zip(box, grow, labels.shape))
    local = labels[region]
    dist = ndimage.distance_transform_edt(local != primary, sampling=spacing)
    near = np.unique(local[(dist <= gap_mm) & (local > 0)])
    return [primary] + [int(k) for k in near if k != primary]


def grow_into(mask: np.ndarray, prob: np.ndarray, low: float,
              exclude: np.ndarray | None = None) -> np.ndarray:
    """``mask`` grown into every voxel of ``prob >= low`` connected to it (26-connected),
    as uint8; components of ``prob >= low`` that do not touch ``mask`` are not added, nor
    any voxel of ``exclude`` (e.g. the components the primary-clot rule dropped, so that
    a low-probability bridge cannot bring one back).

    Why: a slice-wise network marks a clot's confident core above the threshold while the
    rest of its length (the thin or faint end, the slices where the clot turns) stays
    just below it; growing only what was already kept lengthens the clot without adding a
    component anywhere, so the detection of every patient is unchanged. Hysteresis
    thresholding (seeds at the threshold, grown to ``low``), applied after the primary-clot
    rule rather than before it.

    Examples:
        >>> p = np.array([0.9, 0.4, 0.35, 0.1, 0.5, 0.0]).reshape(6, 1, 1)
        >>> grow_into(p >= 0.8, p, 0.3).ravel().tolist()
        [1, 1, 1, 0, 0, 0]
    """
    mask = np.asarray(mask) > 0
    if not mask.any():
        return mask.astype(np.uint8)
    grow = np.asarray(prob) >= low
    if exclude is not None:
        grow &= ~(np.asarray(exclude) > 0)
    labels, _ = ndimage.label(mask | grow, structure=STRUCTURE_26)
    touched = np.unique(labels[mask])
    return np.isin(labels, touched[touched > 0]).astype(np.uint8)


def keep_primary(mask: np.ndarray, prob: np.ndarray | None, spacing: Sequence[float],
                 gap_mm: float = FRAGMENT_GAP_MM) -> tuple[np.ndarray, list[dict]]:
    """Keep the primary clot (:func:`primary_component`) and its fragments; drop the
    other components and say what was dropped.

    A patient's occlusion is one clot, possibly in pieces; a confident speck on another
    vessel is the commonest false positive of a slice-wise network, and it wrecks surface
    distances and per-patient measurements. Choosing the component with the most
    probability is the rule measured to generalise best to unseen scanners (a learned
    filter fitted on the validation cases lost clots there; the peak probability lost
    more clots than the sum). A second, distant occlusion is dropped too, so
    each dropped component is returned (volume, peak probability, distance) for the
    caller to report.

    Args:
        mask: binary 3D array.
        prob: probabilities on the same grid, or None (then the largest component wins).
        spacing: voxel size in mm, per axis.
        gap_mm: fragments closer than this to the primary clot are kept.

    Returns:
        ``(kept, dropped)``: the uint8 mask and one dict per dropped component
        (``volume_mm3``, ``max_prob``, ``distance_mm`` from the primary clot's surface).

    Examples:
        >>> m = np.zeros((40, 1, 1), bool); m[0:3] = m[30:33] = True
        >>> p = np.where(m, 0.7, 0.0); p[31] = 0.95
        >>> kept, dropped = keep_primary(m, p, (1, 1, 1))
        >>> kept.ravel().nonzero()[0].tolist(), len(dropped)
        ([30, 31, 32], 1)
    """
    mask = np.asarray(mask) > 0
    labels, n = components(mask)
    if n <= 1:
        return mask.astype(np.uint8), []
    boxes = ndimage.find_objects(labels)
    primary = primary_component(labels, n, prob)
    members = fragments_of(labels, boxes, primary, spacing, gap_mm)
    keep = np.zeros(n + 1, dtype=bool)
    keep[members] = True
    kept = keep[labels]
    dist = ndimage.distance_transform_edt(~kept, sampling=np.asarray(spacing, float))
    sizes = component_volumes_mm3(labels, n, spacing)
    dropped = [{"volume_mm3": round(float(sizes[k - 1]), 3),
                "max_prob": (round(float(np.max(np.asarray(prob)[boxes[k - 1]]
                                                [labels[boxes[k - 1]] == k])), 4)
                             if prob is not None else None),
                "distance_mm": round(float(dist[boxes[k - 1]][labels[boxes[k - 1]] == k]
                                           .min()), 2)}
               for k in range(1, n + 1) if not keep[k]]
    return kept.astype(np.uint8), dropped


def keep_confirmed(mask: np.ndarray, prob: np.ndarray, confirm: np.ndarray,
                   threshold: float, spacing: Sequence[float]) -> tuple[np.ndarray, list[dict]]:
    """Keep the components of ``mask`` where a second opinion, the probability map
    ``confirm`` of another model, reaches ``threshold`` in at least one voxel; say what
    was dropped.

    Two networks that see a case differently make different mistakes: on the phantom a
    3D network trained briefly finds most clots but leaves blobs in the brain tissue away
    from any vessel, where a 2.5D network rarely fires, while the 2.5D network misses long
    clots the 3D one finds. Keeping the 3D network's components that the 2.5D network also
    marks keeps the first's detections without the second's blind spots deciding.

    Args:
        mask: binary 3D array (after the threshold and size rule).
        prob: the probability ``mask`` came from (for the report of what was dropped).
        confirm: the confirming probability on the same grid.
        threshold: the confirming model's own threshold, typically.
        spacing: voxel size in mm, per axis.

    Returns:
        ``(kept, dropped)``: the uint8 mask and one dict per dropped component
        (``volume_mm3``, ``max_prob``, ``confirm_max_prob``, ``reason``).

    Examples:
        >>> m = np.zeros((9, 1, 1), bool); m[0:3] = m[6:9] = True
        >>> other = np.zeros((9, 1, 1)); other[7] = 0.9
        >>> kept, dropped = keep_confirmed(m, m * 0.95, other, 0.8, (1, 1, 1))
        >>> kept.ravel().nonzero()[0].tolist(), dropped[0]["confirm_max_prob"]
        ([6, 7, 8], 0.0)
    """
    mask = np.asarray(mask) > 0
    labels, n = components(mask)
    if n == 0:
        return mask.astype(np.uint8), []
    ids = np.arange(1, n + 1)
    second = np.asarray(ndimage.maximum(np.asarray(confirm, np.float32), labels, ids), float)
    ok = np.concatenate([[False], second >= threshold])
    sizes = component_volumes_mm3(labels, n, spacing)
    peaks = np.asarray(ndimage.maximum(np.asarray(prob, np.float32), labels, ids), float)
    dropped = [{"volume_mm3": round(float(sizes[k - 1]), 3),
                "max_prob": round(float(peaks[k - 1]), 4),
                "confirm_max_prob": round(float(second[k - 1]), 4), "reason": "unconfirmed"}
               for k in ids if not ok[k]]
    return ok[labels].astype(np.uint8), dropped


def keep_primary_grown(mask: np.ndarray, prob: np.ndarray, spacing: Sequence[float],
                       grow_threshold: float | None, exclude: np.ndarray | None = None,
                       grow_prob: np.ndarray | None = None) -> tuple[np.ndarray, list[dict]]:
    """:func:`keep_primary`, then the kept clot grown into its touching voxels of at least
    ``grow_threshold`` in ``grow_prob`` (default ``prob``; :func:`grow_into`; None or 0:
    no growth), never into a component the rule dropped nor into ``exclude`` (components
    an earlier step dropped): ``predict``'s post-processing after the threshold and size
    rule.

    Examples:
        >>> p = np.array([0.9, 0.6, 0.0, 0.0, 0.6, 0.7]).reshape(6, 1, 1)
        >>> kept, dropped = keep_primary_grown(p >= 0.65, p, (20, 1, 1), 0.5)
        >>> kept.ravel().tolist(), len(dropped)
        ([1, 1, 0, 0, 0, 0], 1)
    """
    kept, dropped = keep_primary(mask, prob, spacing)
    if grow_threshold:
        off = (np.asarray(mask) > 0) & (kept == 0)
        if exclude is not None:
            off |= np.asarray(exclude) > 0
        kept = grow_into(kept, prob if grow_prob is None else grow_prob, grow_threshold,
                         exclude=off)
    return kept, dropped
