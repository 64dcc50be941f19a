"""Mined negatives: crop centres where the network being trained calls clot outside the clot.

The hard negatives of :func:`clotseg.data.cache.hard_negative_points` are chosen by HU
ranges before training: contrast-filled lumen and dense tissue. What the network actually
gets wrong can lie in neither range. On the phantom, the clot-free patients' confident
false positives are slow-flow segments: CTA as dark as a clot, NCCT at blood density.
Random crops meet such a segment rarely, so the network hardly ever sees one as a negative.

Every ``data.mine_every`` epochs, :func:`mine` predicts a few training cases as validation
does, on whole volumes, and takes points from the components above the threshold that lie
outside the clot. These points become crop centres for ``data.mined_negative_fraction`` of
each batch (:meth:`clotseg.data.dataset.SliceSampler.set_mined`). Each mining pass replaces
a case's points, so the pool follows the network's current errors. Nothing here needs
labels beyond the clot mask, so it works on real data as on the phantom.

Hand-written: no library we use mines false positives from a whole-volume prediction
into a 2D sampler.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clotseg.data.cache import CachedCase, text_rng
from clotseg.inference.engine import predict_probabilities
from clotseg.masks import component_labels

#: Voxels within this many steps of the clot (diagonals included) are not counted as false
#: positives: the clot's own fringe is a boundary error, not a wrong structure.
CLOT_MARGIN = 2
#: Points kept per false-positive component, so that a small speck counts like a big one.
POINTS_PER_COMPONENT = 8
#: Points kept per case at most.
MAX_POINTS = 256

__all__ = ["false_positive_points", "mine", "mining_cases"]


def false_positive_points(prob: np.ndarray, mask: np.ndarray, threshold: float,
                          seed: str) -> np.ndarray:
    """``(m, 3)`` ``z, x, y`` points of the components of ``prob >= threshold`` outside the
    clot (grown by :data:`CLOT_MARGIN`), up to :data:`POINTS_PER_COMPONENT` from each and
    :data:`MAX_POINTS` in all, drawn at random (seeded by ``seed``).

    Args:
        prob: probability map ``(X, Y, Z)``.
        mask: the clot mask on the same grid (empty for a clot-free case).
        threshold: the probability from which a voxel counts as called clot.
        seed: text that seeds the draw (the case and the epoch), so a pass is repeatable.

    Examples:
        >>> p = np.zeros((8, 8, 4), np.float32); p[1, 1, 2] = 0.9; p[6, 6, 1] = 0.8
        >>> m = np.zeros(p.shape, np.uint8); m[6, 6, 1] = 1
        >>> false_positive_points(p, m, 0.5, "x").tolist()
        [[2, 1, 1]]
    """
    called = np.asarray(prob) >= threshold
    clot = np.asarray(mask) > 0
    if clot.any():
        called &= ~ndimage.binary_dilation(clot, np.ones((3, 3, 3), bool), CLOT_MARGIN)
    labels, n = component_labels(called)  # what a clot is everywhere in clotseg
    if n == 0:
        return np.zeros((0, 3), np.int32)
    rng = text_rng(seed)
    idx = np.flatnonzero(labels)
    idx = idx[rng.permutation(idx.size)]
    lab = labels.ravel()[idx]
    order = np.argsort(lab, kind="stable")  # each component's voxels, in random order
    lab_sorted = lab[order]
    first = np.searchsorted(lab_sorted, lab_sorted)  # where each component's run starts
    keep = idx[order][np.arange(idx.size) - first < POINTS_PER_COMPONENT]
    if keep.size > MAX_POINTS:
        keep = rng.choice(keep, MAX_POINTS, replace=False)
    x, y, z = np.unravel_index(np.sort(keep), labels.shape)
    return np.column_stack([z, x, y]).astype(np.int32)


def mining_cases(n_cases: int, per_pass: int, pass_index: int) -> list[int]:
    """The training cases mining pass ``pass_index`` (0-based) predicts: ``per_pass`` of
    them in turn, so that every case is visited every ``ceil(n / per_pass)`` passes."""
    k = min(per_pass, n_cases)
    return sorted({(pass_index * k + j) % n_cases for j in range(k)})


def mine(model, cases: list[CachedCase], indices: list[int], *, slab: int, pad_multiple: int,
         threshold: float, batch_size: int, device, amp: bool, cta_mip: int,
         seed: str) -> dict[int, np.ndarray]:
    """Predict training cases ``indices`` on whole volumes (as validation does, never
    augmented) and return ``{index: (m, 3) z, x, y}`` false-positive points of each, an
    empty array where the network calls nothing outside the clot.

    ``model`` must be the inference-ready copy (:func:`clotseg.inference.engine.
    prepare_model`); a case's slices are read through its memory-mapped cache.
    """
    found = {}
    for i in indices:
        case = cases[i]
        prob = predict_probabilities(model, np.asarray(case.image, dtype=np.float32),
                                     slab=slab, pad_multiple=pad_multiple,
                                     batch_size=batch_size, device=device, amp=amp,
                                     views=("axial",), cta_mip=cta_mip)
        found[i] = false_positive_points(prob, np.asarray(case.mask), threshold,
                                         f"{case.case_id}:{seed}")
    return found
