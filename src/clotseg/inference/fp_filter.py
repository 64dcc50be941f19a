"""A false-positive filter for predicted components, learned on the validation cases.

A 2.5D network leaves small confident specks on other vessels (plaque, slow flow, a
bifurcation). A fixed size rule cannot tell a 6 mm³ speck from a 6 mm³ distal clot; what
does is the component's context in the patient: a patient has one occlusion, so the
component the model is most sure of is the clot and a faint blob 40 mm away is not. The
filter scores each component from a handful of such features and drops those below a
threshold. Both the weights and the threshold are fitted on the validation cases after
training (nnU-Net also decides its post-processing on validation predictions), with the
same guard as the threshold tuning: no validation clot that was found may be lost.

Two features read the scans around the component, because the probability alone cannot
tell a clot from a segment of slow or delayed flow: both are a filling defect on the CTA,
and the network scores both near 1. What differs is what a radiologist checks next. A
clot is denser on the NCCT than the blood in the patent vessel next to it (the hyperdense
sign), slow-flowing blood is not; and beyond a clot the vessel fills late through
collaterals, so the enhancement of the patent vessel differs between the component's two
ends, while on both sides of a slow-flow segment it is the same. Both are differences
within the patient, so a scanner's HU calibration offset cancels. They are read from the
scans clipped to the network's input windows, so that validation (whose cached scans are
stored windowed) and ``predict`` see the same numbers. A feature that cannot be measured
(a missing scan, no patent vessel touching the component, a single end) is NaN and
scored at the fitted mean, i.e. as no evidence either way.

A logistic regression (scikit-learn) is enough for a few features and a few dozen
components, and is stored as plain numbers in ``model.json`` (no pickled estimator,
nothing to unpickle at predict time); prediction applies it with numpy. A filter keeps
the feature list it was fitted on, so a run fitted before the image features existed
still loads and scores with its own five.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from clotseg.masks import components

#: Per-component features, in the order :func:`component_features` returns them.
FEATURES = ["log_volume_mm3", "max_prob", "mean_prob", "is_most_probable",
            "log_distance_to_most_probable_mm", "ncct_excess_over_vessel_hu",
            "vessel_end_enhancement_ratio"]
#: The features of the filters fitted before the image features (still loaded).
PROBABILITY_FEATURES = FEATURES[:5]
#: CTA minus NCCT above which a voxel next to a component counts as patent, enhancing
#: vessel: far above any clot's or slow flow's (≤ 50 HU in the phantom; perviousness
#: rarely exceeds 40 HU in studies) and far below a lumen's (≥ 100 HU in arterial phase).
VESSEL_ENHANCEMENT_HU = 60.0
#: How far around a component its neighbourhood is read, in voxels.
SHELL_VOXELS = 2
#: Fewest voxels of patent vessel (or of one vessel end) for a feature to be measured.
MIN_VESSEL_VOXELS = 3
#: Smallest scale each feature is standardised with. Validation probabilities are
#: computed on the training grid and ``predict``'s are interpolated onto the CTA grid, so
#: a component's mean probability differs by a few hundredths between the two: without a
#: floor, a feature that varies by 0.001 on validation gets a weight that turns such a
#: difference into a verdict (and L2 regularisation cannot see it).
MIN_SCALE = [0.25, 0.1, 0.1, 0.25, 0.25, 2.0, 0.1]
#: Candidate score thresholds; the lowest one that keeps every found clot and scores best.
SCORE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Fewest components of each class (clot / not clot) needed to fit a filter.
MIN_PER_CLASS = 3


def component_features(prob: np.ndarray, labels: np.ndarray, n: int, spacing,
                       cta=None, ncct=None) -> np.ndarray:
    """``(n, len(FEATURES))`` features of components ``1..n`` of ``labels``.

    ``cta``, ``ncct``: the scans on the grid of ``labels`` (:class:`WindowedScan`, or HU
    arrays already clipped to the network's windows); without both, the image features
    are NaN."""
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
                            np.log1p(dist), image_features(labels, n, cta, ncct)])


class WindowedScan:
    """A scan as the filter reads it: HU clipped to the network's window, computed box by
    box where a component lies, so that a whole-head scan is never copied.

    ``array`` holds HU, or with ``normalised`` the network's input in [0, 1] (the training
    cache), which is mapped back to HU through the same window."""

    def __init__(self, array, window, normalised: bool = False):
        self.array, self.normalised = array, normalised
        self.low, self.high = float(window[0]), float(window[1])

    def __getitem__(self, box) -> np.ndarray:
        v = np.asarray(self.array[box], dtype=np.float32)
        if self.normalised:
            v = self.low + v * (self.high - self.low)
        return np.clip(v, self.low, self.high)


def image_features(labels: np.ndarray, n: int, cta, ncct) -> np.ndarray:
    """``(n, 2)``: each component's NCCT excess over the patent vessel touching it (HU)
    and the ratio of the weakest to the strongest enhancement of its vessel ends.

    Written here because no imaging library measures a segment against the vessel it
    sits in; each component is read inside its own bounding box, so the cost follows the
    components' size, not the scan's."""
    out = np.full((n, 2), np.nan)
    if cta is None or ncct is None or n == 0:
        return out
    pad = SHELL_VOXELS + 1
    for i, box in enumerate(ndimage.find_objects(labels, max_label=n)):
        if box is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        inside = labels[box] == i + 1
        shell = ndimage.binary_dilation(inside, iterations=SHELL_VOXELS) & ~inside
        c, nc = np.asarray(cta[box], dtype=np.float32), np.asarray(ncct[box], dtype=np.float32)
        enhancement = c - nc
        vessel = shell & (enhancement > VESSEL_ENHANCEMENT_HU)
        if vessel.sum() < MIN_VESSEL_VOXELS:
            continue
        out[i, 0] = float(nc[inside].mean() - np.median(nc[vessel]))
        ends, k = ndimage.label(vessel)
        ids = np.flatnonzero(np.bincount(ends.ravel(), minlength=k + 1)[1:]
                             >= MIN_VESSEL_VOXELS) + 1
        if len(ids) >= 2:
            levels = np.asarray(ndimage.median(enhancement, ends, ids), dtype=float)
            out[i, 1] = levels.min() / levels.max()
    return out


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
        unknown = [name for name in f.features if name not in FEATURES]
        sizes = {len(f.features), len(f.weights), len(f.mean), len(f.scale)}
        if unknown or not f.features or len(sizes) != 1:
            raise ValueError(f"component filter for features {f.features}; this version "
                             f"computes {FEATURES}")
        return f

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Clot scores of the rows of ``x`` (all :data:`FEATURES`, as
        :func:`component_features` returns them); an unmeasured (NaN) feature counts as its
        fitted mean."""
        x = np.asarray(x, dtype=float)[:, [FEATURES.index(n) for n in self.features]]
        mean = np.asarray(self.mean)
        z = (np.where(np.isnan(x), mean, x) - mean) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.bias)))

    def apply(self, mask: np.ndarray, prob: np.ndarray, spacing, cta=None,
              ncct=None) -> np.ndarray:
        """``mask`` without the components scored below the threshold (uint8); ``cta`` and
        ``ncct`` as for :func:`component_features`."""
        labels, n = components(np.asarray(mask) > 0)
        if n == 0:
            return np.asarray(mask, dtype=np.uint8)
        x = component_features(prob, labels, n, spacing, cta, ncct)
        keep = self.scores(x) >= self.threshold
        return np.concatenate([[False], keep])[labels].astype(np.uint8)


def fit_component_filter(cases: list[tuple]) -> tuple[ComponentFilter | None, str]:
    """Fit on ``(mask, prob, reference, spacing[, cta, ncct])`` per validation case (mask:
    the post-processed prediction; ``cta``, ``ncct`` as for :func:`component_features`,
    without them the filter uses the probability features only). Returns the filter, or
    None with the reason it was not fitted (too few components of a class, or no
    threshold better than no filter)."""
    from sklearn.linear_model import LogisticRegression

    feats, target, case_of = [], [], []
    per_case = []
    with_scans = all(len(c) > 4 and c[4] is not None and c[5] is not None for c in cases)
    for i, (mask, prob, ref, spacing, *scans) in enumerate(cases):
        labels, n = components(np.asarray(mask) > 0)
        x = component_features(prob, labels, n, spacing, *(scans if with_scans else ()))
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
    names = FEATURES if with_scans else PROBABILITY_FEATURES
    x = x[:, [FEATURES.index(n) for n in names]]
    measured = (~np.isnan(x)).sum(axis=0)
    mean = np.where(measured > 0, np.nansum(x, axis=0) / np.maximum(measured, 1), 0.0)
    x = np.where(np.isnan(x), mean, x)  # unmeasured: no evidence either way
    floor = [MIN_SCALE[FEATURES.index(n)] for n in names]
    scale = np.maximum(x.std(axis=0), floor)
    lr = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000)
    lr.fit((x - mean) / scale, y)
    f = ComponentFilter([float(v) for v in lr.coef_[0]], float(lr.intercept_[0]),
                        [float(v) for v in mean], [float(v) for v in scale], 0.0,
                        features=list(names), fitted_on=counts)
    s = f.scores(np.concatenate(feats))
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
