"""The patient's occlusion in one row: the primary clot and its fragments (``cases.csv``).

``clots.csv`` lists every predicted component, including any small false positive on
another vessel. A clinician wants one answer per patient — how long, how large and how
pervious *the* occlusion is — that a distant speck does not change. The primary clot is
the component that holds the most probability (the sum over its voxels; the largest
when no probability map is given), together with every other component within
:data:`FRAGMENT_GAP_MM` of it (a fragmented clot: 7 % of patients have several pieces,
usually a few millimetres apart). The gap is measured as the straight-line surface
distance in millimetres, which for fragments of one vessel segment is close to the
distance along the vessel. Everything else is counted in ``other_components``.

``qc_score`` and ``review`` are filled in by ``predict`` from
:mod:`clotseg.inference.qc` (NaN / empty when a mask is measured on its own). ``inputs``
(the last column) names the scans used, as in ``clots.csv``; for a one-modality case the
values that need the absent scan are NaN (:mod:`clotseg.measure.clots`).

Volume is the voxel count of the union; length is the sum of each fragment's centreline
length (:mod:`clotseg.measure.centreline`), like a reader adding up the pieces; densities
and perviousness are means over all the clot's voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Volume
from clotseg.masks import FRAGMENT_GAP_MM, bounding_box, components, fragments_of, primary_component
from clotseg.measure.centreline import centreline_length_mm
from clotseg.measure.clots import NAN, PERVIOUS_HU, inputs_text
from clotseg.measure.midline import estimate_midline
from clotseg.measure.side import side_of

__all__ = ["FRAGMENT_GAP_MM", "PATIENT_CSV_COLUMNS", "summarise_patient"]

PATIENT_CSV_COLUMNS = ["case_id", "has_clot", "n_components", "clot_fragments",
                       "volume_mm3", "length_mm", "ncct_mean_hu", "ncct_median_hu",
                       "cta_mean_hu", "perviousness_hu", "pervious", "max_prob",
                       "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
                       "other_components", "other_volume_mm3", "side", "qc_score",
                       "review", "inputs"]


def summarise_patient(case_id: str, mask: Volume, cta: Volume | None, ncct: Volume | None,
                      prob: np.ndarray | None = None) -> dict:
    """One ``cases.csv`` row for ``mask`` (all volumes on the CTA grid, as for
    :func:`clotseg.measure.clots.measure_case`; either scan, not both, may be None).

    Args:
        case_id: the row's ``case_id``.
        mask: the clot mask; cta, ncct: the scans on its grid (None: absent).
        prob: the probability map, or None (the largest component is then primary).

    Examples:
        >>> v = Volume(np.zeros((4, 4, 4), np.int16), (1.0, 1.0, 1.0))
        >>> m = v.with_array(np.pad(np.ones((2, 2, 2), np.uint8), 1))
        >>> summarise_patient("c", m, v, None)["inputs"]
        'cta'
    """
    ref = cta if cta is not None else ncct
    any_clot = np.asarray(mask.array) > 0
    bbox = bounding_box(any_clot)  # work inside the mask's box: a whole head is 100 M voxels
    labels, n = components(any_clot[bbox]) if bbox is not None else (None, 0)
    row = dict.fromkeys(PATIENT_CSV_COLUMNS, NAN)
    row.update(case_id=case_id, has_clot=n > 0, n_components=n, review=None,
               inputs=inputs_text(cta, ncct))
    if n == 0:
        row.update(clot_fragments=0, volume_mm3=0.0, length_mm=0.0, pervious=None, side=None,
                   other_components=0, other_volume_mm3=0.0,
                   max_prob=float(np.max(prob)) if prob is not None and np.size(prob) else NAN)
        return row
    ids = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(labels.shape, np.uint8), labels, ids)
    local_prob = None if prob is None else np.asarray(np.asarray(prob)[bbox], np.float32)
    peak = (np.full(n, NAN) if local_prob is None
            else ndimage.maximum(local_prob, labels, ids))
    primary = primary_component(labels, n, local_prob)  # most probability, then largest
    boxes = ndimage.find_objects(labels)
    members = fragments_of(labels, boxes, primary, mask.spacing, FRAGMENT_GAP_MM)
    clot = np.isin(labels, members)
    cta_hu = _clot_hu(cta, bbox, clot)
    ncct_hu = _clot_hu(ncct, bbox, clot)
    length = sum(centreline_length_mm(labels[boxes[k - 1]] == k, mask.spacing)
                 for k in members)
    cta_mean = NAN if cta_hu is None else float(cta_hu.mean())
    ncct_mean = NAN if ncct_hu is None else float(ncct_hu.mean())
    delta = cta_mean - ncct_mean
    offset = np.array([sl.start for sl in bbox])
    centroid = ref.grid.index_to_physical(np.argwhere(clot).mean(axis=0) + offset)[0]
    others = [k for k in ids if k not in members]
    row.update(clot_fragments=len(members), volume_mm3=float(clot.sum() * mask.voxel_volume),
               length_mm=float(length), ncct_mean_hu=ncct_mean,
               ncct_median_hu=NAN if ncct_hu is None else float(np.median(ncct_hu)),
               cta_mean_hu=cta_mean, perviousness_hu=delta,
               pervious=bool(delta >= PERVIOUS_HU) if np.isfinite(delta) else None,
               max_prob=float(np.nanmax(peak[np.asarray(members) - 1])) if prob is not None
               else NAN,
               centroid_x_mm=float(centroid[0]), centroid_y_mm=float(centroid[1]),
               centroid_z_mm=float(centroid[2]), other_components=len(others),
               other_volume_mm3=float(sum(sizes[k - 1] for k in others) * mask.voxel_volume),
               side=side_of(float(centroid[0]), estimate_midline(ref, cta).range))
    return row


def _clot_hu(vol: Volume | None, bbox: tuple, clot: np.ndarray) -> np.ndarray | None:
    """HU of ``vol`` at the clot's voxels inside ``bbox`` (None without the scan)."""
    return None if vol is None else np.asarray(vol.array[bbox], dtype=np.float64)[clot]

