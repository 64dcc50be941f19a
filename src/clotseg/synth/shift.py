"""Shifted phantom settings: patients that look as if another scanner and protocol made them.

A model that only ever sees one phantom "site" can learn its spacing, noise, contrast
timing and HU calibration instead of the clot. To measure generalisation, a test cohort
is drawn from the same anatomy and lesion model but imaged differently, with settings the
training cohort never shows. :class:`ImagingShift` lists every knob as a range; a case
draws its values from its own random stream, so the anatomy, the clot and the other draws
of ``plan_case`` stay exactly those of the unshifted case with the same seed.

Knobs (defaults reproduce the standard phantom; :data:`SHIFTED` is the held-out "site"):

* noise level (a factor on the thickness-dependent σ) and scanner blur (PSF, mm);
* contrast timing: the arterial bolus factor (standard 0.37–1.0, i.e. lumen ≈ 150–460 HU)
  from early arterial (> 1) to late venous (≈ 0.25: lumen ≈ 100 HU), with parenchymal and
  cavernous-sinus enhancement rising as the bolus passes into the veins;
* HU calibration offsets per modality (a scanner's water/air calibration drift);
* in-plane spacing 0.4–1.0 mm and slice thickness 0.5–2.5 mm (the grid keeps its
  physical field of view, so the voxel count changes);
* vessel radii ±20 %;
* head rotation in the scan (oblique storage directions up to ``rotate_deg``);
* the share of cases whose NCCT is reconstructed at thick slices (2.5 or 5 mm) on its own
  grid (``thick_ncct_share``; drawn by :func:`clotseg.synth.cohort.ncct_thickness_for`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from clotseg.io.volume import Grid, Volume
from clotseg.synth import phantom
from clotseg.synth.phantom import LABELS, CasePlan, SynthCase


@dataclass(frozen=True)
class ImagingShift:
    """Ranges (low, high) drawn uniformly per case; None keeps the standard phantom's."""

    name: str = "standard"
    noise_scale: tuple[float, float] | None = None
    psf_mm: tuple[float, float] | None = None
    bolus: tuple[float, float] | None = None
    venous_enhancement_hu: tuple[float, float] | None = None  # extra brain enhancement, late
    hu_offset: tuple[float, float] | None = None  # per modality, drawn independently
    inplane_mm: tuple[float, float] | None = None
    slice_mm: tuple[float, float] | None = None
    radius_scale: tuple[float, float] | None = None
    rotate_deg: float = 0.0
    #: Probability that a case's NCCT is thick-slice (a cohort default; see cohort.py).
    thick_ncct_share: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: The held-out "site" of the quality benchmark: every knob outside or at the edge of what
#: the standard small phantom (in-plane 0.6–0.75 mm, slices 0.9–1.3 mm, bolus 0.37–1.0,
#: PSF 0.3–0.5 mm, noise factor 0.9–1.1) shows in training.
SHIFTED = ImagingShift(
    name="shifted",
    noise_scale=(0.6, 1.8),
    psf_mm=(0.25, 0.9),
    bolus=(0.25, 1.15),
    venous_enhancement_hu=(0.0, 12.0),
    hu_offset=(-15.0, 15.0),
    inplane_mm=(0.4, 1.0),
    slice_mm=(0.5, 2.5),
    radius_scale=(0.8, 1.2),
    rotate_deg=20.0,
    thick_ncct_share=0.3,
)

SHIFTS = {"standard": ImagingShift(), "shifted": SHIFTED}

#: Largest array edge of a shifted grid (voxels): a 0.4 mm grid over a small ROI stays small.
MAX_EDGE = 200


def make_shifted_case(seed: int, size: str = "small", shift: ImagingShift = SHIFTED, *,
                      clot: bool | None = None, ncct_thickness_mm: float | None = None
                      ) -> SynthCase:
    """The case ``make_case(seed, size)`` imaged under ``shift`` (registered pair);
    ``ncct_thickness_mm`` reconstructs the NCCT at thick slices on its own grid (same
    direction as the CTA), as :func:`clotseg.synth.phantom.render_case` does."""
    plan = phantom.plan_case(seed, size, clot=clot)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A1F7]))
    drawn = apply_shift(plan, shift, rng)
    case = phantom.render_case(plan, registered=True, ncct_thickness_mm=ncct_thickness_mm)
    offsets = drawn.get("hu_offset", (0.0, 0.0))
    cta = _offset(case.cta, offsets[0])
    ncct = _offset(case.ncct, offsets[1])
    if offsets[0] or offsets[1]:  # truth HU measured on the images as written
        m = case.clot.array.astype(bool)
        if m.any():
            case.truth["cta_mean_hu"] = float(cta.array[m].mean())
            if ncct.grid.same_as(case.clot.grid):
                case.truth["ncct_mean_hu"] = float(ncct.array[m].mean())
            else:  # a thick NCCT: the truth was read on the thin NCCT at the clot
                case.truth["ncct_mean_hu"] += int(round(offsets[1]))
            case.truth["perviousness_hu"] = case.truth["cta_mean_hu"] - case.truth["ncct_mean_hu"]
    case.truth["shift"] = shift.name
    case.truth["shift_values"] = drawn
    return SynthCase(cta, ncct, case.clot, case.truth, case.labels)


def _offset(vol: Volume, hu: float) -> Volume:
    if not hu:
        return vol
    arr = np.clip(vol.array.astype(np.int32) + int(round(hu)), -1024, 3071).astype(np.int16)
    return Volume.on_grid(arr, vol.grid)


def _draw(rng: np.random.Generator, rng_range) -> float | None:
    return None if rng_range is None else float(rng.uniform(*rng_range))


def apply_shift(plan: CasePlan, shift: ImagingShift, rng: np.random.Generator) -> dict:
    """Change ``plan`` in place to image it under ``shift``; returns the values drawn."""
    drawn: dict = {}
    img = plan.imaging
    if shift.noise_scale is not None:
        img["noise_scale"] = rng.uniform(*shift.noise_scale, 2)
        drawn["noise_scale"] = [float(v) for v in img["noise_scale"]]
    if (psf := _draw(rng, shift.psf_mm)) is not None:
        img["psf_mm"] = drawn["psf_mm"] = psf
    if (bolus := _draw(rng, shift.bolus)) is not None:
        _rebolus(plan, bolus)
        drawn["bolus"] = bolus
        late = 1.0 - min(max((bolus - 0.25) / 0.5, 0.0), 1.0)  # 1 at the latest phase
        if shift.venous_enhancement_hu is not None:
            lo, hi = shift.venous_enhancement_hu
            img["cta_brain_enh"] += lo + (hi - lo) * late * rng.uniform(0.7, 1.0)
            img["cavernous_hu"] *= 1.0 + late
            drawn["brain_enhancement_hu"] = float(img["cta_brain_enh"])
    if shift.hu_offset is not None:
        drawn["hu_offset"] = [float(v) for v in rng.uniform(*shift.hu_offset, 2)]
    if (scale := _draw(rng, shift.radius_scale)) is not None:
        plan.tree.radius = [r * scale for r in plan.tree.radius]
        drawn["radius_scale"] = scale
    if shift.inplane_mm is not None or shift.slice_mm is not None or shift.rotate_deg:
        plan.grid = _regrid(plan, shift, rng, drawn)
    return drawn


def _rebolus(plan: CasePlan, bolus: float) -> None:
    """Rescale the enhancement (CTA − blood) of every opacified sample to a new bolus."""
    old, blood = plan.flow["bolus"], plan.flow["blood"]
    k = bolus / old
    for v in plan.values:
        sel = (v["label"] == LABELS["lumen"]) | (v["label"] == LABELS["slow_flow"])
        v["cta"][sel] = blood + (v["cta"][sel] - blood) * k
    plan.flow["bolus"] = bolus


def _regrid(plan: CasePlan, shift: ImagingShift, rng: np.random.Generator, drawn: dict
            ) -> Grid:
    """The CTA grid with new spacing (same physical field of view, same centre) and an
    extra rotation, moved so that the clot stays in view."""
    g = plan.grid
    d = g.direction_matrix
    if shift.rotate_deg:
        axis = rng.normal(size=3)
        angle = rng.uniform(-shift.rotate_deg, shift.rotate_deg)
        rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(angle)).as_matrix()
        d = rot @ d
        drawn["rotation_deg"] = float(angle)
    inplane = _draw(rng, shift.inplane_mm)
    slice_ = _draw(rng, shift.slice_mm)
    old_sp, old_shape = np.asarray(g.spacing), np.asarray(g.shape)
    extent = old_sp * (old_shape - 1)
    axial = int(np.argmax(np.abs(d[2, :])))  # the array axis closest to patient z
    sp = old_sp.copy()
    for a in range(3):
        new = slice_ if a == axial else inplane
        if new is not None:
            sp[a] = new
    sp = np.round(sp, 4)
    shape = np.clip(np.round(extent / sp).astype(int) + 1, 8, MAX_EDGE)
    centre = np.asarray(g.origin) + g.direction_matrix @ (extent / 2)
    origin = centre - d @ (sp * (shape - 1) / 2)
    drawn["spacing"] = [float(s) for s in sp]
    grid = Grid(tuple(int(s) for s in shape), tuple(float(s) for s in sp),
                tuple(float(v) for v in origin), tuple(float(v) for v in d.ravel()))
    if plan.clots:
        pts = phantom._clot_points(plan.tree, plan.clots) @ plan.pose.T + plan.centre
        grid = phantom._keep_in_view(grid, pts, margin=float(rng.uniform(3.0, 12.0)))
    return grid
