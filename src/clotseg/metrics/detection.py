"""Case-level detection: a clot counts as found when prediction and reference overlap."""

from __future__ import annotations

import numpy as np

from clotseg.inference.postprocess import components


def detection(pred: np.ndarray, ref: np.ndarray) -> str:
    """``TP`` (overlap), ``FN`` (clot missed), ``FP`` (clot-free case, something predicted),
    ``TN`` (both empty). A prediction elsewhere on a clot case is a miss (``FN``)."""
    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    if r.any():
        return "TP" if (p & r).any() else "FN"
    return "FP" if p.any() else "TN"


def false_positive_components(pred: np.ndarray, ref: np.ndarray) -> int:
    """Predicted connected components (26-connected) that do not touch the reference."""
    labels, n = components(np.asarray(pred) > 0)
    if n == 0:
        return 0
    hit = np.unique(labels[(np.asarray(ref) > 0) & (labels > 0)])
    return int(n - len(hit))
