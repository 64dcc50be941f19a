"""Post-processing of probability maps into clot masks (3D, in millimetres)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 26-connectivity: voxels touching by a corner belong to the same clot.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 26-connected components of a binary mask."""
    return ndimage.label(mask, structure=STRUCTURE_26)


def postprocess(prob: np.ndarray, spacing, *, threshold: float = 0.5,
                min_component_mm3: float = 0.0, keep_largest: bool = False) -> np.ndarray:
    """Threshold, drop components smaller than ``min_component_mm3``, optionally keep the
    largest; returns uint8."""
    mask = prob >= threshold
    if not mask.any() or (min_component_mm3 <= 0 and not keep_largest):
        return mask.astype(np.uint8)
    labels, n = components(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing))
    keep = sizes >= min_component_mm3
    if keep_largest and keep.any():
        keep = np.zeros_like(keep)
        keep[int(np.argmax(sizes))] = True
    lut = np.concatenate([[False], keep])
    return lut[labels].astype(np.uint8)
