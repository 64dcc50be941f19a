"""Post-processing of probability maps into clot masks, in 3D and in millimetres.

Applied on the CTA grid (after any mapping back from a preprocessed grid), so volumes are
the ones the user measures: voxel counts times the CTA's voxel volume. What a component
is and how small ones are dropped is mask geometry, shared with metrics and measurements,
and lives in :mod:`clotseg.masks`.
"""

from __future__ import annotations

import numpy as np

from clotseg.masks import filter_components


def postprocess(prob: np.ndarray, spacing, *, threshold: float = 0.5,
                min_component_mm3: float = 0.0, keep_largest: bool = False) -> np.ndarray:
    """Threshold (``prob >= threshold``), drop components smaller than
    ``min_component_mm3``, optionally keep the largest; returns uint8."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return filter_components(np.asarray(prob) >= threshold, spacing,
                             min_component_mm3=min_component_mm3, keep_largest=keep_largest)
