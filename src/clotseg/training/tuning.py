"""Choose the post-processing on the validation cases once training has ended.

A network trained for a few minutes gives well-placed but imperfectly calibrated
probabilities, and the small false-positive blobs it leaves (on calcified plaque, slow
flow, noise) are best removed by a component-size rule. Which threshold and which
smallest kept component work best depends on the model, so — as nnU-Net decides its
post-processing from validation predictions rather than fixing it — the best checkpoint
is run once on the validation cases and every pair from :data:`THRESHOLDS` ×
:data:`MIN_COMPONENTS_MM3` is scored by the same mean 3D Dice that selected the
checkpoint. The winner goes into ``RUN/model.json`` (what ``predict`` uses) and the
whole table into ``RUN/train.json``.

Guards against fitting noise on a handful of validation cases and against buying Dice
with missed clots:

* the configured values (``train.threshold``, ``train.min_component_mm3``) are kept
  unless another pair beats them by at least :data:`MIN_GAIN`;
* a pair that detects fewer validation clots than the configured pair (a clot counts as
  detected when the prediction overlaps it) is never chosen;
* the size rule stops at 10 mm³ (a sphere of 2.7 mm diameter): it removes specks,
  never a component the size of a plausible distal clot. On the phantom, rules of
  40 mm³ and then 20 mm³ scored best on validation yet deleted test clots of 20–35 mm³
  that the validation cases happened not to contain.

Every pair also gets ``patients_with_speck``: the validation patients left with a
component away from their clot (any component, for a clot-free one). ``predict`` keeps
one clot per patient, so a clot patient's speck rarely shows; but the same speck in a
clot-free patient is a false positive, and validation folds often hold no clot-free
patient at all. The share is the run's estimate of how many clot-free patients like the
training data's will get one. On the saved maps of two 30-minute phantom runs (90
patients per site; ``benchmarks/results/speck_share_*.json``) the share among 76 clot
patients followed the share among 14 clot-free ones across the whole grid (Pearson r
0.97-0.98, mean difference 0.05-0.10), and at the chosen 0.8 / 10 mm³ the validation
patients' share (5 and 4 of 12) was close to the clot-free share on the training site
(0.36, 0.29) and below the unseen site's (0.43, 0.64). It is reported, not used to
choose: with a dozen validation patients it would pick size rules that delete small
clots (README).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from clotseg.config import Config
from clotseg.data.cache import CachedCase
from clotseg.inference.engine import predict_probabilities, prepare_model
from clotseg.masks import component_volumes_mm3, components
from clotseg.metrics.overlap import dice as overlap_dice

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_COMPONENTS_MM3 = (0.0, 2.5, 5.0, 7.5, 10.0)
#: Smallest gain in mean validation Dice for which a tuned pair replaces the configured one.
MIN_GAIN = 0.01


@dataclass
class TuningResult:
    """The chosen pair, the configured pair's score, and every pair's score."""

    threshold: float
    min_component_mm3: float
    val_dice: float
    configured_val_dice: float
    changed: bool
    table: list[dict] = field(default_factory=list)
    #: validation patients with a component away from their clot at the chosen pair, and
    #: how many patients there were (module docstring)
    patients_with_speck: int = 0
    n_patients: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _scores(prob: np.ndarray, ref: np.ndarray, spacing, thresholds, sizes
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dice, whether the clot is detected (always True without a clot), and whether a
    component away from the clot is kept (a speck), for every (threshold, min size) pair
    of one case; each of shape (len(t), len(s)).

    Each threshold is labelled once; the size rule is then a lookup on the component
    volumes, so the grid costs one labelling per threshold.
    """
    dice = np.zeros((len(thresholds), len(sizes)))
    found = np.ones_like(dice, dtype=bool)
    speck = np.zeros_like(dice, dtype=bool)
    for i, t in enumerate(thresholds):
        labels, n = components(prob >= t)
        vols = component_volumes_mm3(labels, n, spacing)
        on_clot = np.zeros(n + 1, dtype=bool)
        on_clot[np.unique(labels[ref])] = True
        for j, s in enumerate(sizes):
            keep = np.concatenate([[False], vols >= s])
            kept = keep[labels]
            dice[i, j] = overlap_dice(kept, ref)
            speck[i, j] = bool((keep & ~on_clot).any())
            if ref.any():
                found[i, j] = bool(np.logical_and(kept, ref).any())
    return dice, found, speck


def validation_probabilities(model, cases: list[CachedCase], cfg: Config, device,
                             spill: Path | None = None) -> list[np.ndarray]:
    """Probability maps of ``cases`` (canonical order), predicted as ``predict`` does.

    ``spill``: a folder where each map is written as it is made and handed back
    memory-mapped, so host memory holds one map at a time whatever the number of
    validation cases (a whole-head ROI's map is 80 MB).
    """
    net = prepare_model(copy.deepcopy(model), device, in_channels=2 * cfg.data.slab)
    out = []
    for case in cases:
        prob = predict_probabilities(net, np.asarray(case.image, dtype=np.float32),
                                     slab=cfg.data.slab, pad_multiple=cfg.data.pad_multiple,
                                     batch_size=cfg.train.val_batch_size, device=device,
                                     amp=cfg.train.amp, views=cfg.data.views,
                                     cta_mip=cfg.data.cta_mip)
        if spill is not None:
            path = Path(spill) / f"{case.case_id}.prob.npy"
            np.save(path, prob)
            del prob
            prob = np.load(path, mmap_mode="r")
        out.append(prob)
    return out


def tune_postprocess(model, cases: list[CachedCase], cfg: Config, device,
                     thresholds=THRESHOLDS, sizes=MIN_COMPONENTS_MM3,
                     probs: list[np.ndarray] | None = None) -> TuningResult:
    """Score every post-processing pair on ``cases`` with ``model`` (see module docstring);
    ``probs``: their probability maps when already computed."""
    thresholds = sorted(set(thresholds) | {cfg.train.threshold})
    sizes = sorted(set(sizes) | {cfg.train.min_component_mm3})
    if probs is None:
        probs = validation_probabilities(model, cases, cfg, device)
    total = np.zeros((len(thresholds), len(sizes)))
    detected = np.zeros_like(total)
    specks = np.zeros_like(total)
    for case, prob in zip(cases, probs):
        dice, found, speck = _scores(prob, np.asarray(case.mask).astype(bool), case.spacing,
                                     thresholds, sizes)
        total += dice
        detected += found
        specks += speck
    mean = total / max(len(cases), 1)
    ci, cj = thresholds.index(cfg.train.threshold), sizes.index(cfg.train.min_component_mm3)
    allowed = np.where(detected >= detected[ci, cj], mean, -np.inf)
    bi, bj = np.unravel_index(int(np.argmax(allowed)), mean.shape)
    changed = bool(mean[bi, bj] >= mean[ci, cj] + MIN_GAIN)
    if not changed:
        bi, bj = ci, cj
    table = [{"threshold": t, "min_component_mm3": s, "val_dice": round(float(mean[i, j]), 5),
              "clots_detected": int(detected[i, j]), "patients_with_speck": int(specks[i, j])}
             for i, t in enumerate(thresholds) for j, s in enumerate(sizes)]
    return TuningResult(float(thresholds[bi]), float(sizes[bj]), float(mean[bi, bj]),
                        float(mean[ci, cj]), changed, table, int(specks[bi, bj]), len(cases))
