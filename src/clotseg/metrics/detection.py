"""Case-level detection: a clot counts as found when prediction and reference overlap."""

from __future__ import annotations

import numpy as np

from clotseg.masks import components

#: Detection outcomes of one case.
OUTCOMES = ("TP", "FN", "FP", "TN")


def detection(pred: np.ndarray, ref: np.ndarray) -> str:
    """``TP`` prediction overlaps the reference clot; ``FN`` reference clot not touched
    (a prediction elsewhere does not count); ``FP`` clot-free reference but something
    predicted; ``TN`` both empty."""
    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    if r.any():
        return "TP" if (p & r).any() else "FN"
    return "FP" if p.any() else "TN"


def count_components(mask: np.ndarray) -> int:
    """Number of 26-connected components."""
    return int(components(np.asarray(mask) > 0)[1])


def false_positive_components(pred: np.ndarray, ref: np.ndarray) -> int:
    """Predicted 26-connected components that do not touch the reference at all."""
    labels, n = components(np.asarray(pred) > 0)
    if n == 0:
        return 0
    touching = np.unique(labels[(np.asarray(ref) > 0) & (labels > 0)])
    return int(n - len(touching))
