"""A false-positive filter for predicted components, learned on the validation cases.

A 2.5D network leaves small confident specks on other vessels (plaque, slow flow, a
bifurcation). A fixed size rule cannot tell a 6 mm³ speck from a 6 mm³ distal clot; what
does is the component's context in the patient: a patient has one occlusion, so the
component the model is most sure of is the clot and a faint blob 40 mm away is not. The
filter scores each component from a handful of such features and drops those below a
threshold. Both the weights and the threshold are fitted on the validation cases after
training (nnU-Net also decides its post-processing on validation predictions), with the
same guard as the threshold tuning: no validation clot that was found may be lost.

A logistic regression (scikit-learn) is enough for a few features and a few dozen
components, and is stored as plain numbers in ``model.json`` (no pickled estimator,
nothing to unpickle at predict time); prediction applies it with numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from clotseg.masks import components

#: Per-component features, in the order of the stored weights.
FEATURES = ["log_volume_mm3", "max_prob", "mean_prob", "is_most_probable",
            "log_distance_to_most_probable_mm"]
#: Smallest scale each feature is standardised with. Validation probabilities are
#: computed on the training grid and ``predict``'s are interpolated onto the CTA grid, so
#: a component's mean probability differs by a few hundredths between the two: without a
#: floor, a feature that varies by 0.001 on validation gets a weight that turns such a
#: difference into a verdict (and L2 regularisation cannot see it).
MIN_SCALE = [0.25, 0.1, 0.1, 0.25, 0.25]
#: Candidate score thresholds; the lowest one that keeps every found clot and scores best.
SCORE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Fewest components of each class (clot / not clot) needed to fit a filter.
MIN_PER_CLASS = 3


def component_features(prob: np.ndarray, labels: np.ndarray, n: int, spacing) -> np.ndarray:
    """``(n, len(FEATURES))`` features of components ``1..n`` of ``labels``."""
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    ids = np.arange(1, n + 1)
    prob = np.asarray(prob, dtype=np.float32)
    count = ndimage.sum_labels(np.ones(labels.shape, np.float32), labels, ids)
    peak = np.asarray(ndimage.maximum(prob, labels, ids), dtype=float)
    mean = np.asarray(ndimage.mean(prob, labels, ids), dtype=float)
    centres = np.asarray(ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids),
                         dtype=float).reshape(n, 3) * np.asarray(spacing, dtype=float)
    top = int(np.argmax(peak))
    dist = np.linalg.norm(centres - centres[top], axis=1)
    volume = count * float(np.prod(np.asarray(spacing, dtype=float)))
    return np.column_stack([np.log1p(volume), peak, mean, (np.arange(n) == top).astype(float),
                            np.log1p(dist)])


@dataclass
class ComponentFilter:
    """Logistic-regression weights on standardised :data:`FEATURES` and a threshold."""

    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    threshold: float
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    fitted_on: dict = field(default_factory=dict)  # counts, for the record

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ComponentFilter:
        f = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if f.features != FEATURES or len(f.weights) != len(FEATURES):
            raise ValueError(f"component filter for features {f.features}; this version "
                             f"computes {FEATURES}")
        return f

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.bias)))

    def apply(self, mask: np.ndarray, prob: np.ndarray, spacing) -> np.ndarray:
        """``mask`` without the components scored below the threshold (uint8)."""
        labels, n = components(np.asarray(mask) > 0)
        if n == 0:
            return np.asarray(mask, dtype=np.uint8)
        keep = self.scores(component_features(prob, labels, n, spacing)) >= self.threshold
        return np.concatenate([[False], keep])[labels].astype(np.uint8)


def fit_component_filter(cases: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple]]
                         ) -> tuple[ComponentFilter | None, str]:
    """Fit on ``(mask, prob, reference, spacing)`` per validation case (mask: the
    post-processed prediction). Returns the filter, or None with the reason it was not
    fitted (too few components of a class, or no threshold better than no filter)."""
    from sklearn.linear_model import LogisticRegression

    feats, target, case_of = [], [], []
    per_case = []
    for i, (mask, prob, ref, spacing) in enumerate(cases):
        labels, n = components(np.asarray(mask) > 0)
        x = component_features(prob, labels, n, spacing)
        hit = np.asarray(ndimage.maximum(np.asarray(ref) > 0, labels, np.arange(1, n + 1)),
                         dtype=bool).reshape(-1) if n else np.zeros(0, bool)
        feats.append(x)
        target.append(hit)
        case_of.append(np.full(n, i))
        per_case.append((labels, n))
    x, y = np.concatenate(feats), np.concatenate(target)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    counts = {"components": len(y), "clot": n_pos, "not_clot": n_neg, "cases": len(cases)}
    if n_pos < MIN_PER_CLASS or n_neg < MIN_PER_CLASS:
        return None, f"too few components to learn from ({counts})"
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), MIN_SCALE)
    lr = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000)
    lr.fit((x - mean) / scale, y)
    f = ComponentFilter([float(v) for v in lr.coef_[0]], float(lr.intercept_[0]),
                        [float(v) for v in mean], [float(v) for v in scale], 0.0,
                        fitted_on=counts)
    s = f.scores(x)
    cases_idx = np.concatenate(case_of)
    best, best_dice = None, _mean_dice(cases, per_case, cases_idx, np.ones(len(y), bool))
    found0 = _found(cases, per_case, cases_idx, np.ones(len(y), bool))
    for t in SCORE_THRESHOLDS:
        keep = s >= t
        if _found(cases, per_case, cases_idx, keep) < found0:
            continue
        d = _mean_dice(cases, per_case, cases_idx, keep)
        if d > best_dice + 1e-9:
            best, best_dice = t, d
    if best is None:
        return None, f"no score threshold beats keeping every component ({counts})"
    f.threshold = float(best)
    f.fitted_on = {**counts, "val_dice": round(float(best_dice), 5)}
    return f, "fitted"


def _kept(per_case, cases_idx, keep, i) -> np.ndarray:
    labels, n = per_case[i]
    return np.concatenate([[False], keep[cases_idx == i]])[labels]


def _mean_dice(cases, per_case, cases_idx, keep) -> float:
    from clotseg.metrics.overlap import dice

    return float(np.mean([dice(_kept(per_case, cases_idx, keep, i), np.asarray(c[2]) > 0)
                          for i, c in enumerate(cases)]))


def _found(cases, per_case, cases_idx, keep) -> int:
    return sum(bool(np.logical_and(_kept(per_case, cases_idx, keep, i), np.asarray(c[2]) > 0)
                    .any()) for i, c in enumerate(cases) if np.asarray(c[2]).any())
