"""Post-processing: threshold, 26-connected components measured in mm³, keep-largest."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.inference.postprocess import postprocess
from clotseg.masks import components, filter_components

SPACING = (0.5, 0.5, 2.0)  # 0.5 mm³ per voxel


def _two_clots() -> np.ndarray:
    prob = np.zeros((20, 20, 10), dtype=np.float32)
    prob[2:6, 2:6, 2:4] = 0.9  # 32 voxels = 16 mm³
    prob[12:14, 12:14, 6:7] = 0.8  # 4 voxels = 2 mm³
    prob[15, 2, 2] = 0.49  # below threshold
    return prob


def test_small_components_dropped_by_volume_in_mm3():
    prob = _two_clots()
    kept = postprocess(prob, SPACING, threshold=0.5, min_component_mm3=2.5)
    assert kept.dtype == np.uint8
    assert kept.sum() == 32 and kept[2:6, 2:6, 2:4].all()
    # 2 mm³ is kept at a 2 mm³ minimum, and with 1 mm voxels (4 mm³) at 2.5 mm³.
    assert postprocess(prob, SPACING, min_component_mm3=2.0).sum() == 36
    assert postprocess(prob, (1.0, 1.0, 1.0), min_component_mm3=2.5).sum() == 36
    assert postprocess(prob, SPACING, min_component_mm3=0).sum() == 36


def test_keep_largest_and_threshold():
    prob = _two_clots()
    largest = postprocess(prob, SPACING, keep_largest=True)
    assert largest.sum() == 32
    assert postprocess(prob, SPACING, threshold=0.85).sum() == 32
    assert postprocess(prob, SPACING, threshold=0.4).sum() == 37
    assert postprocess(np.zeros((4, 4, 4)), SPACING, keep_largest=True,
                       min_component_mm3=5).sum() == 0
    with pytest.raises(ValueError):
        postprocess(prob, SPACING, threshold=0.0)


def test_components_are_26_connected():
    m = np.zeros((5, 5, 5), dtype=bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # touch by a corner only
    m[4, 4, 0] = True
    _, n = components(m)
    assert n == 2
    # the corner-touching pair (2 voxels of 1 mm³) survives a 1.5 mm³ minimum together
    assert filter_components(m, (1, 1, 1), min_component_mm3=1.5).sum() == 2
