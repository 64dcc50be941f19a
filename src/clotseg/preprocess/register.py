"""Rigid NCCT→CTA registration (SimpleITK) and a check that the result is aligned.

Method
------
Rigid (6 degrees of freedom, :class:`SimpleITK.Euler3DTransform`), Mattes mutual
information (32 bins), regular-step gradient descent, three resolution levels (shrink 4,
2, 1 with 2, 1, 0 mm Gaussian smoothing) on working copies of both images at ≥ 1 mm
spacing, with a random subset of at most ``max_samples`` voxels per level (fast on one
core; the fixed random seed makes it deterministic), then a refinement pass at the working
resolution with L-BFGS-B and a fresh, twice larger sample: gradient descent zig-zags and
stops early in the narrow valleys of weakly constrained rotations (up to ~1 mm off on a
smooth synthetic skull), which the quasi-Newton step follows.
The result is never worse, by the metric, than the starting point. The returned transform
maps CTA (fixed) points to NCCT (moving) points, as SimpleITK's resampler expects.

What drives the metric
----------------------
The two scans differ where contrast is: arteries and venous sinuses are 150–600 HU on CTA
and ≈ 40 HU on NCCT. Mutual information tolerates a different intensity mapping, but a
mapping that is *spatially* different (bright tubes in one image only) adds joint-histogram
entropy that nothing can remove and can bias the optimum. So the metric is made to look at
bone and the head outline, which are identical in both scans:

* both images are clamped to [-100, 1500] HU (air, soft tissue and bone keep their contrast;
  dense cortical bone and metal saturate so they do not dominate), and HU above 100 are
  compressed 0.15:1 so that the histogram bins resolve CSF / grey / white matter too (a
  tight ROI shows little bone; see :func:`_metric_image`);
* contrast-filled vessels are taken out of the CTA's metric mask: voxels of 120–700 HU that
  are not within 3 mm of bone (> 700 HU), grown by one voxel. Bone edges, whose partial
  volume falls in the same HU range, are kept by the 3 mm guard.

Initialisation: ``CenteredTransformInitializer`` puts the centre of rotation at the CTA's
centre of mass (``moments``) or centre (``geometry``). Scans of one session share the
scanner's patient coordinates, so ``auto`` compares the metric of "no translation" with
"centres of mass aligned" and starts from the better one.

Alignment check
---------------
:func:`alignment_check` measures, on the CTA grid, the normalised mutual information
(Studholme, (H(A) + H(B)) / H(A, B), 1 = independent, 2 = identical) and the mean symmetric
distance between the bone surfaces (> 700 HU, above the brightest contrast lumen so vessels
do not count as bone) and between the head/air outlines (> -300 HU) of both images. A pair
counts as aligned when that surface distance is at most ``max(1.5 mm, 0.75 × the coarsest
voxel spacing)``; otherwise a warning names the distance.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume

CLAMP_HU = (-100.0, 1500.0)
SOFT_HU = 100.0
REFINE_SAMPLES = 2
REFINE_TOLERANCE = 1e5  # L-BFGS-B cost convergence factor (1e7 "moderate", 10 "extreme")
BONE_COMPRESSION = 0.15
VESSEL_HU = (120.0, 700.0)
BONE_HU = 700.0
OUTLINE_HU = -300.0
WORK_SPACING_MM = 1.0
#: A working image holds at most about this many voxels: a whole-head field of view
#: (≈ 10 litres at 1 mm) is registered at a correspondingly coarser spacing (≈ 1.5 mm),
#: which keeps registration to seconds with no loss that matters for a 2.5–5 mm NCCT.
WORK_MAX_VOXELS = 4_000_000
MIN_SURFACE_TOL_MM = 1.5


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_rigid`.

    ``transform`` maps CTA points to NCCT points (use it with
    :func:`clotseg.preprocess.resample.resample_to_grid`); :meth:`transform_dict` is its
    JSON form. Metric values are Mattes mutual information (more negative = better).
    """

    transform: Any  # SimpleITK.Euler3DTransform
    metric_before: float
    metric_after: float
    moved: Volume  # NCCT resampled with ``transform`` onto the CTA grid (or ``moved_grid``)
    alignment_ok: bool
    message: str
    alignment_before: dict = field(default_factory=dict)
    alignment_after: dict = field(default_factory=dict)
    seconds: float = 0.0
    iterations: int = 0

    def transform_dict(self) -> dict:
        return transform_to_dict(self.transform)

    def info(self) -> dict:
        """JSON-serialisable summary (transform, metrics, checks, timing)."""
        return {"transform": self.transform_dict(),
                "metric_before": float(self.metric_before),
                "metric_after": float(self.metric_after),
                "alignment_before": self.alignment_before,
                "alignment_after": self.alignment_after,
                "alignment_ok": bool(self.alignment_ok), "message": self.message,
                "seconds": round(float(self.seconds), 3), "iterations": int(self.iterations)}


# --- transform (de)serialisation ---------------------------------------------------------
def transform_to_dict(transform) -> dict:
    """JSON form of an Euler3D transform: 6 parameters (rotations about x, y, z in radians,
    then translation in mm), the centre of rotation, and the matrix/translation it means."""
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform(transform)
    params = [float(v) for v in tx.GetParameters()]
    return {"type": "Euler3DTransform", "maps": "CTA point -> NCCT point (LPS, mm)",
            "parameters": params, "center": [float(c) for c in tx.GetCenter()],
            "compute_zyx": bool(tx.GetComputeZYX()),
            "matrix": [float(v) for v in tx.GetMatrix()],
            "translation": [float(v) for v in tx.GetTranslation()],
            "rotation_deg": float(np.degrees(_rotation_angle(tx.GetMatrix()))),
            "translation_mm": float(np.linalg.norm(params[3:]))}


def transform_from_dict(data: dict):
    """Rebuild the SimpleITK transform saved by :func:`transform_to_dict`."""
    import SimpleITK as sitk

    if data.get("type", "Euler3DTransform") != "Euler3DTransform":
        raise ValueError(f"unsupported transform type {data.get('type')!r}")
    tx = sitk.Euler3DTransform()
    tx.SetCenter([float(c) for c in data.get("center", (0.0, 0.0, 0.0))])
    tx.SetComputeZYX(bool(data.get("compute_zyx", False)))
    tx.SetParameters([float(p) for p in data["parameters"]])
    return tx


def _rotation_angle(matrix) -> float:
    m = np.asarray(matrix, dtype=float).reshape(3, 3)
    return float(np.arccos(np.clip((np.trace(m) - 1) / 2, -1.0, 1.0)))


# --- registration ------------------------------------------------------------------------
def register_rigid(fixed_cta: Volume, moving_ncct: Volume, *, init: str = "auto",
                   iterations: int = 200, bins: int = 32, max_samples: int = 25_000,
                   shrink_factors=(4, 2, 1), smoothing_sigmas_mm=(2.0, 1.0, 0.0),
                   seed: int = 1, default_value: float = -1000.0,
                   warn: bool = True, moved_grid: Grid | None = None) -> RegistrationResult:
    """Rigidly register the NCCT (moving) to the CTA (fixed); see the module docstring.

    Returns the transform, Mattes MI before/after, the NCCT resampled onto the CTA grid
    (or onto ``moved_grid``, e.g. the part of it that is kept) and the alignment check;
    warns (``UserWarning``) when the result does not look aligned.
    """
    import SimpleITK as sitk

    if not moving_ncct.grid.overlaps(fixed_cta.grid):
        raise ValueError("NCCT and CTA do not overlap in patient space")
    t0 = time.perf_counter()
    fixed_hu = _working_image(fixed_cta)
    mask = _metric_mask(fixed_hu)
    fixed, moving = _metric_image(fixed_hu), _metric_image(_working_image(moving_ncct))

    def metric(transform) -> float:
        return _metric(fixed, moving, mask, transform, bins, max_samples, seed)

    tx, m_start, before = _initial_transform(fixed, moving, init, metric)
    start = sitk.Euler3DTransform(tx)
    method = _method(fixed, mask, bins, max_samples, seed, shrink_factors, smoothing_sigmas_mm,
                     iterations)
    refine = _refine_method(fixed, mask, bins, REFINE_SAMPLES * max_samples, seed + 1)
    try:
        for stage in (method, refine):
            stage.SetInitialTransform(tx, inPlace=True)
            stage.Execute(fixed, moving)
    except RuntimeError as exc:
        raise ValueError(f"registration failed: {str(exc).splitlines()[-1]}") from None
    after = metric(tx)
    if np.isfinite(m_start) and not after < m_start:
        # The optimiser never returns something worse than where it started (by the
        # same metric): with no real motion it can wander off a flat optimum.
        tx, after = start, m_start
    identity = sitk.Euler3DTransform(tx)
    identity.SetParameters((0.0,) * 6)
    work_grid = Volume.from_sitk(fixed).grid
    fixed_work = fixed_cta if fixed_cta.grid.same_as(work_grid) else _downsample_hu(
        fixed_cta, work_grid, default_value)
    check_before = _check_on(work_grid, fixed_work, moving_ncct, identity, default_value)
    check_after = _check_on(work_grid, fixed_work, moving_ncct, tx, default_value)
    del fixed_work
    moved = resample_moving(moving_ncct, moved_grid or fixed_cta.grid, tx, default_value)
    ok, message = _verdict(check_after, tx, fixed_cta, moving_ncct)
    if warn and not ok:
        warnings.warn(f"NCCT-to-CTA registration: {message}", UserWarning, stacklevel=2)
    return RegistrationResult(tx, before, after, moved, ok, message, check_before, check_after,
                              time.perf_counter() - t0, int(method.GetOptimizerIteration()))


def resample_moving(moving: Volume, grid: Grid, transform, default_value: float = -1000.0
                    ) -> Volume:
    """NCCT on the CTA grid through ``transform`` (linear interpolation)."""
    from clotseg.preprocess.resample import resample_to_grid

    return resample_to_grid(moving, grid, transform=transform, interpolation="linear",
                            default_value=default_value)


def work_spacing_mm(grid: Grid) -> float:
    """Working spacing: WORK_SPACING_MM, coarser for fields of view that would exceed
    WORK_MAX_VOXELS at it."""
    litres = float(np.prod(np.asarray(grid.shape) * np.asarray(grid.spacing)))
    return WORK_SPACING_MM * max(1.0, (litres / WORK_SPACING_MM**3 / WORK_MAX_VOXELS) ** (1 / 3))


def _downsample_hu(vol: Volume, grid: Grid, default_value: float) -> Volume:
    """``vol`` (HU) on a coarser ``grid``: block-averaged first when much finer, then
    linearly resampled."""
    from clotseg.preprocess.resample import block_mean, resample_to_grid

    return resample_to_grid(block_mean(vol, grid.spacing), grid, default_value=default_value)


def _working_image(vol: Volume):
    """Float32 HU image clamped to CLAMP_HU at ≥ the working spacing (block averaging and
    Gaussian anti-aliasing where downsampled)."""
    import SimpleITK as sitk

    from clotseg.preprocess.resample import block_mean, grid_with_spacing, reference_image

    target = np.maximum(np.asarray(vol.spacing), work_spacing_mm(vol.grid))
    src = block_mean(vol, target)
    arr = np.clip(np.asarray(src.array, dtype=np.float32), *CLAMP_HU)
    img = src.with_array(arr).to_sitk()
    spacing = np.maximum(np.asarray(src.spacing), target)
    if np.allclose(spacing, src.spacing):
        return img
    sigma = [float(0.5 * np.sqrt(max(t**2 - s**2, 0.0))) for t, s in zip(spacing, src.spacing)]
    img = sitk.SmoothingRecursiveGaussian(img, [max(s, 1e-3) for s in sigma])
    ref = reference_image(grid_with_spacing(vol.grid, spacing))
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, CLAMP_HU[0],
                         sitk.sitkFloat32)


def _metric_image(hu_image):
    """Intensities the metric sees: HU up to SOFT_HU kept 1:1, above it compressed by
    BONE_COMPRESSION, all shifted to be ≥ 0 (the moments initialiser needs positive mass).

    With a linear scale, 32 histogram bins over [-100, 1500] HU put CSF, grey and white
    matter into one or two bins, so a scan showing little bone (a tight ROI) would have
    almost nothing to register on; compressing bone gives soft tissue its share of bins
    while bone and air stay far apart."""
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(hu_image)
    soft = np.minimum(hu, SOFT_HU)
    mapped = soft - CLAMP_HU[0] + np.maximum(hu - SOFT_HU, 0.0) * BONE_COMPRESSION
    out = sitk.GetImageFromArray(mapped.astype(np.float32))
    out.CopyInformation(hu_image)
    return out


def _metric_mask(fixed):
    """CTA voxels that drive the metric: everything but contrast-filled vessels."""
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(fixed)  # [k, j, i], HU
    spacing = np.asarray(fixed.GetSpacing())[::-1]
    bone = hu > BONE_HU
    guard = ndimage.distance_transform_edt(~bone, sampling=spacing) <= 3.0 if bone.any() else bone
    vessel = (hu >= VESSEL_HU[0]) & (hu <= VESSEL_HU[1]) & ~guard
    vessel = ndimage.binary_dilation(vessel, ndimage.generate_binary_structure(3, 1))
    mask = sitk.GetImageFromArray((~vessel).astype(np.uint8))
    mask.CopyInformation(fixed)
    return mask


def _sampling(image, max_samples: int, shrink: int = 1) -> float:
    n = np.prod(image.GetSize()) / float(shrink**3)
    return float(min(1.0, max_samples / max(n, 1.0)))


def _method(fixed, mask, bins, max_samples, seed, shrink_factors, sigmas, iterations):
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    r.SetMetricFixedMask(mask)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentagePerLevel(
        [_sampling(fixed, max_samples, s) for s in shrink_factors], seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=int(iterations),
        relaxationFactor=0.8, gradientMagnitudeTolerance=1e-8)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
    r.SetSmoothingSigmasPerLevel([float(s) for s in sigmas])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return r


def _refine_method(fixed, mask, bins, max_samples, seed):
    """Final pass at the working resolution with a quasi-Newton optimiser (L-BFGS-B).

    Gradient descent zig-zags and stops early in the narrow valleys that weakly constrained
    rotations make (a smooth skull turning about its own axis); L-BFGS-B follows them. It
    takes no parameter scales (radians and millimetres as they are), which suits the small
    remaining corrections."""
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    r.SetMetricFixedMask(mask)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(_sampling(fixed, max_samples), seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-7, numberOfIterations=100,
                           maximumNumberOfCorrections=7, maximumNumberOfFunctionEvaluations=400,
                           costFunctionConvergenceFactor=REFINE_TOLERANCE)
    r.SetShrinkFactorsPerLevel([1])
    r.SetSmoothingSigmasPerLevel([0.0])
    return r


def _metric(fixed, moving, mask, transform, bins, max_samples, seed) -> float:
    """Mattes MI of the working images under ``transform`` (same sampling as the fit)."""
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    # A value only: no gradient images needed (they dominate the cost otherwise).
    r.MetricUseFixedImageGradientFilterOff()
    r.MetricUseMovingImageGradientFilterOff()
    r.SetMetricFixedMask(mask)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(_sampling(fixed, max_samples), seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetInitialTransform(sitk.Euler3DTransform(transform), inPlace=False)
    try:
        return float(r.MetricEvaluate(fixed, moving))
    except RuntimeError:  # too few overlapping samples
        return float("nan")


def _initial_transform(fixed, moving, init, metric) -> tuple[Any, float, float]:
    """Start transform, its metric, and the metric with no motion (the "before" value)."""
    import SimpleITK as sitk

    if init not in ("auto", "identity", "geometry", "moments"):
        raise ValueError(f"unknown initialisation {init!r}")
    mode = (sitk.CenteredTransformInitializerFilter.GEOMETRY if init == "geometry"
            else sitk.CenteredTransformInitializerFilter.MOMENTS)
    tx = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), mode))
    still = sitk.Euler3DTransform(tx)
    still.SetParameters((0.0,) * 6)
    m_still = metric(still)
    if init == "identity":
        return still, m_still, m_still
    m_moved = metric(tx)
    if init in ("geometry", "moments") or (
            np.isfinite(m_moved) and (not np.isfinite(m_still) or m_moved < m_still)):
        return tx, m_moved, m_still
    return still, m_still, m_still


def _check_on(work_grid: Grid, fixed: Volume, moving_ncct: Volume, transform,
              default_value) -> dict:
    """Alignment check on the working CTA grid (≥ 1 mm, cheap), in HU; ``fixed`` is the
    CTA already on that grid."""
    import SimpleITK as sitk

    moved = resample_moving(moving_ncct, work_grid, transform, default_value)
    ones = moving_ncct.with_array(np.ones(moving_ncct.shape, np.uint8)).to_sitk()
    from clotseg.preprocess.resample import reference_image

    valid = sitk.Resample(ones, reference_image(work_grid), transform,
                          sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return alignment_check(fixed, moved, valid=Volume.from_sitk(valid).array > 0,
                           spacing_hint=max(moving_ncct.spacing))


def _verdict(check: dict, tx, fixed: Volume, moving: Volume) -> tuple[bool, str]:
    info = transform_to_dict(tx)
    motion = (f"rotation {info['rotation_deg']:.2f} deg, translation "
              f"{info['translation_mm']:.2f} mm")
    if check.get("surface_mm") is None:
        return False, (f"{motion}; alignment could not be verified (no bone or head outline "
                       "found in both images)")
    if not check["ok"]:
        return False, (f"{motion}; poor alignment: bone/outline surfaces "
                       f"{check['surface_mm']:.2f} mm apart on average (tolerance "
                       f"{check['tolerance_mm']:.2f} mm)")
    if info["rotation_deg"] > 20 or info["translation_mm"] > 50:
        return False, f"{motion}: implausibly large motion between two scans of one session"
    return True, f"{motion}; surfaces {check['surface_mm']:.2f} mm apart on average"


# --- alignment check ---------------------------------------------------------------------
def alignment_check(fixed: Volume, moving_on_fixed_grid: Volume, *,
                    valid: np.ndarray | None = None, spacing_hint: float | None = None,
                    tolerance_mm: float | None = None) -> dict:
    """How well two CT volumes on one grid line up (see module docstring).

    ``valid`` (bool array) limits the check to voxels where the moving image has data (its
    resampled field of view); ``spacing_hint`` is the moving image's coarsest spacing before
    resampling (a 5 mm NCCT cannot be judged to the millimetre). Returns a dict with
    ``nmi``, ``bone_surface_mm``, ``outline_surface_mm``, ``surface_mm`` (None when no
    surface was found), ``tolerance_mm`` and ``ok``.
    """
    if not moving_on_fixed_grid.grid.same_as(fixed.grid):
        raise ValueError("alignment_check needs both volumes on the same grid")
    a = np.asarray(fixed.array, dtype=np.float32)
    b = np.asarray(moving_on_fixed_grid.array, dtype=np.float32)
    valid = np.ones(a.shape, bool) if valid is None else np.asarray(valid, bool)
    # Off the array border and two voxels inside the moving image's field of view, where
    # interpolation with the fill value would draw false surfaces.
    valid = ndimage.binary_erosion(valid, iterations=2, border_value=0)
    spacing = np.asarray(fixed.spacing)
    coarse = max(float(spacing.max()), float(spacing_hint or 0.0))
    tol = tolerance_mm if tolerance_mm is not None else max(MIN_SURFACE_TOL_MM, 0.75 * coarse)
    bone = _surface_distance(a > BONE_HU, b > BONE_HU, valid, spacing)
    outline = _surface_distance(a > OUTLINE_HU, b > OUTLINE_HU, valid, spacing)
    parts = [d for d in (bone, outline) if d is not None]
    if parts:
        n = sum(w for _, w in parts)
        surface = float(sum(d * w for d, w in parts) / n)
    else:
        surface = None
    return {"nmi": _nmi(a[valid], b[valid]),
            "bone_surface_mm": None if bone is None else round(bone[0], 4),
            "outline_surface_mm": None if outline is None else round(outline[0], 4),
            "surface_mm": None if surface is None else round(surface, 4),
            "tolerance_mm": round(float(tol), 4),
            "ok": bool(surface is not None and surface <= tol)}


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a mask (the array border does not count as boundary)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def _surface_distance(ma: np.ndarray, mb: np.ndarray, valid: np.ndarray, spacing,
                      min_voxels: int = 50, max_queries: int = 8000) -> tuple[float, int] | None:
    """Mean symmetric distance (mm) between the surfaces of two masks, inside ``valid``;
    returns (distance, number of surface voxels) or None when a surface is too small.
    Nearest-neighbour search between surface voxel centres (a k-d tree is much cheaper than
    distance maps of the whole volume; an evenly spread subset of at most
    ``max_queries`` surface voxels per side is enough for a mean)."""
    from scipy.spatial import cKDTree

    full_a, full_b = _surface(ma), _surface(mb)
    sa, sb = full_a & valid, full_b & valid
    na, nb = int(sa.sum()), int(sb.sum())
    if na < min_voxels or nb < min_voxels:
        return None
    sp = np.asarray(spacing, dtype=float)
    qa, qb = np.argwhere(sa)[:: 1 + na // max_queries], np.argwhere(sb)[:: 1 + nb // max_queries]
    da, _ = cKDTree(np.argwhere(full_b) * sp).query(qa * sp)
    db, _ = cKDTree(np.argwhere(full_a) * sp).query(qb * sp)
    return float((da.mean() * na + db.mean() * nb) / (na + nb)), na + nb


def _nmi(a: np.ndarray, b: np.ndarray, bins: int = 64) -> float | None:
    """Normalised mutual information (H(A) + H(B)) / H(A, B) of clamped intensities."""
    if a.size < 100:
        return None
    rng = [CLAMP_HU, CLAMP_HU]
    joint, _, _ = np.histogram2d(np.clip(a, *CLAMP_HU), np.clip(b, *CLAMP_HU), bins=bins,
                                 range=rng)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)

    def h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hab = h(p.ravel())
    return round((h(pa) + h(pb)) / hab, 5) if hab > 0 else None
