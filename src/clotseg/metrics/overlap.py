"""Overlap and volume metrics on binary 3D masks (any non-zero voxel is foreground)."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|); two empty masks agree perfectly (1.0).

    Same value as MONAI's ``compute_dice`` wherever that is defined (MONAI gives NaN when
    both masks are empty)."""
    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(p & r)) / denom


def volume_mm3(mask: np.ndarray, spacing) -> float:
    """Voxel count × voxel volume (mm³)."""
    return int(np.count_nonzero(np.asarray(mask))) * float(np.prod(spacing))


def volume_error_mm3(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """Predicted minus reference volume in mm³ (signed; its absolute value is the
    absolute volume error)."""
    return volume_mm3(pred, spacing) - volume_mm3(ref, spacing)
