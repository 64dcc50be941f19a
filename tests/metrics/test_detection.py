"""Detection outcomes, false-positive components and volume error."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.metrics.detection import count_components, detection, false_positive_components
from clotseg.metrics.overlap import volume_error_mm3, volume_mm3


def masks():
    ref = np.zeros((20, 20, 10), bool)
    ref[5:10, 5:8, 3:6] = True
    return ref


def test_detection_outcomes():
    ref = masks()
    empty = np.zeros_like(ref)
    hit = np.zeros_like(ref)
    hit[9:12, 7, 5] = True  # overlaps the reference in one voxel
    elsewhere = np.zeros_like(ref)
    elsewhere[15:18, 15:18, 1] = True
    assert detection(hit, ref) == "TP"
    assert detection(elsewhere, ref) == "FN"  # a prediction elsewhere does not find the clot
    assert detection(empty, ref) == "FN"
    assert detection(elsewhere, empty) == "FP"
    assert detection(empty, empty) == "TN"


def test_false_positive_components_use_26_connectivity():
    ref = masks()
    pred = ref.copy()
    pred[15, 15, 1] = pred[16, 16, 2] = True  # corner-touching: one component, not two
    pred[0, 19, 9] = True  # a second isolated component
    pred[10, 8, 6] = True  # touches the reference by a corner: part of the hit component
    assert count_components(pred) == 3
    assert false_positive_components(pred, ref) == 2
    assert false_positive_components(ref, ref) == 0
    assert false_positive_components(np.zeros_like(ref), ref) == 0


def test_volume_is_voxel_count_times_voxel_volume():
    ref = masks()
    spacing = (0.4, 0.5, 2.0)
    assert volume_mm3(ref, spacing) == pytest.approx(45 * 0.4)
    pred = ref.copy()
    pred[0, 0, 0] = True
    assert volume_error_mm3(pred, ref, spacing) == pytest.approx(0.4)
    assert volume_error_mm3(ref, pred, spacing) == pytest.approx(-0.4)
