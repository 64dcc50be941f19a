"""Overlap metrics on binary 3D masks."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient; two empty masks agree perfectly (1.0)."""
    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    denom = int(p.sum()) + int(r.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom


def volume_error_mm3(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """Predicted minus reference volume in mm³ (signed)."""
    voxel = float(np.prod(spacing))
    return (int((np.asarray(pred) > 0).sum()) - int((np.asarray(ref) > 0).sum())) * voxel
