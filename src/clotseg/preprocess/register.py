"""Rigid NCCT→CTA registration (SimpleITK), checked for alignment before and after.

Method
------
Rigid (6 degrees of freedom, :class:`SimpleITK.Euler3DTransform`), Mattes mutual
information (32 bins), regular-step gradient descent, three resolution levels (shrink 4,
2, 1 with 2, 1, 0 mm Gaussian smoothing) on working copies of both images at ≥ 1 mm
spacing (coarser for a large field of view: about 2 mm for a whole head, see
:func:`work_spacing_mm`), with a random subset of at most ``max_samples`` voxels per level (fast on one
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

The alignment check is :mod:`clotseg.preprocess.alignment`; the transform's JSON form is
:mod:`clotseg.preprocess.transforms` (both re-exported here for existing imports).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.alignment import (
    CLAMP_HU,
    alignment_check,
    check_on_work_grid,
    verdict,
)
from clotseg.preprocess.resample import (
    block_factors,
    block_mean,
    grid_with_spacing,
    reference_image,
    resample_to_grid,
)
from clotseg.preprocess.transforms import transform_from_dict, transform_to_dict

__all__ = ["RegistrationResult", "alignment_check", "register_rigid", "resample_moving",
           "transform_from_dict", "transform_to_dict", "work_spacing_mm"]

SOFT_HU = 100.0
REFINE_SAMPLES = 2
REFINE_TOLERANCE = 1e5  # L-BFGS-B cost convergence factor (1e7 "moderate", 10 "extreme")
BONE_COMPRESSION = 0.15
VESSEL_HU = (120.0, 700.0)
BONE_HU = 700.0
WORK_SPACING_MM = 1.0
#: A working image holds at most about this many voxels: a whole-head field of view
#: (8–10 litres) is registered at a correspondingly coarser spacing (≈ 2–2.2 mm). The
#: metric's cost per iteration depends on its sample count only, but SimpleITK visits
#: every voxel of the fixed image (and its mask) once per level and per metric set-up, so
#: the working image's size is what a large scan costs. On a clinical-size phantom case
#: (0.4 mm CTA, 4.8 mm NCCT) 4 million voxels (≈ 1.3 mm) took about 22 CPU seconds for a
#: landmark error of 0.09 mm, 1 million about 13-15 s for 0.10 mm: the NCCT's 2.5–5 mm
#: slices, not the working grid, limit what can be resolved.
WORK_MAX_VOXELS = 1_000_000


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_rigid`.

    ``transform`` maps CTA points to NCCT points (use it with
    :func:`clotseg.preprocess.resample.resample_to_grid`); :meth:`transform_dict` is its
    JSON form. Metric values are Mattes mutual information (more negative = better).
    :attr:`moved` (the NCCT through ``transform`` on ``moved_grid``) is resampled on first
    use only: the preprocessing pipeline resamples the NCCT itself, once, onto the grid it
    keeps, so a copy made here would be thrown away.
    """

    transform: Any  # SimpleITK.Euler3DTransform
    metric_before: float
    metric_after: float
    alignment_ok: bool
    message: str
    alignment_before: dict = field(default_factory=dict)
    alignment_after: dict = field(default_factory=dict)
    seconds: float = 0.0
    iterations: int = 0
    moving: Volume | None = field(default=None, repr=False)  # the NCCT as given
    moved_grid: Grid | None = field(default=None, repr=False)  # default: the CTA grid
    default_value: float = -1000.0

    @cached_property
    def moved(self) -> Volume:
        """The NCCT resampled with ``transform`` onto ``moved_grid`` (linear)."""
        if self.moving is None or self.moved_grid is None:
            raise ValueError("this registration result holds no NCCT to resample")
        return resample_moving(self.moving, self.moved_grid, self.transform,
                               self.default_value)

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


# --- registration ------------------------------------------------------------------------
def register_rigid(fixed_cta: Volume, moving_ncct: Volume, *, init: str = "auto",
                   iterations: int = 200, bins: int = 32, max_samples: int = 25_000,
                   shrink_factors=(4, 2, 1), smoothing_sigmas_mm=(2.0, 1.0, 0.0),
                   seed: int = 1, default_value: float = -1000.0,
                   warn: bool = True, moved_grid: Grid | None = None) -> RegistrationResult:
    """Rigidly register the NCCT (moving) to the CTA (fixed); see the module docstring.

    Returns the transform, Mattes MI before/after, the alignment check and (on first use
    of :attr:`RegistrationResult.moved`) the NCCT resampled onto the CTA grid or onto
    ``moved_grid``; warns (``UserWarning``) when the result does not look aligned.
    """
    import SimpleITK as sitk

    if not moving_ncct.grid.overlaps(fixed_cta.grid):
        raise ValueError("NCCT and CTA do not overlap in patient space")
    t0 = time.perf_counter()
    # The CTA is block-averaged once, for the metric's working image and for the check;
    # at clinical size each pass over it costs about a second.
    target = _work_target(fixed_cta)
    fixed_block = block_mean(fixed_cta, target)
    fixed_hu = _working_image(fixed_cta, fixed_block)
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
    if fixed_cta.grid.same_as(work_grid):
        fixed_work = fixed_cta
    else:
        same_blocks = (block_factors(fixed_cta.spacing, work_grid.spacing)
                       == block_factors(fixed_cta.spacing, target))
        fixed_work = _downsample_hu(fixed_cta, work_grid, default_value,
                                    fixed_block if same_blocks else None)
    del fixed_block
    check_before = check_on_work_grid(work_grid, fixed_work, moving_ncct, identity,
                                      default_value)
    check_after = check_on_work_grid(work_grid, fixed_work, moving_ncct, tx, default_value)
    del fixed_work
    ok, message = verdict(check_after, tx)
    if warn and not ok:
        warnings.warn(f"NCCT-to-CTA registration: {message}", UserWarning, stacklevel=2)
    return RegistrationResult(tx, before, after, ok, message, check_before, check_after,
                              time.perf_counter() - t0, int(method.GetOptimizerIteration()),
                              moving=moving_ncct, moved_grid=moved_grid or fixed_cta.grid,
                              default_value=default_value)


def resample_moving(moving: Volume, grid: Grid, transform, default_value: float = -1000.0
                    ) -> Volume:
    """NCCT on the CTA grid through ``transform`` (linear interpolation)."""
    return resample_to_grid(moving, grid, transform=transform, interpolation="linear",
                            default_value=default_value)


def work_spacing_mm(grid: Grid) -> float:
    """Working spacing: WORK_SPACING_MM, coarser for fields of view that would exceed
    WORK_MAX_VOXELS at it."""
    litres = float(np.prod(np.asarray(grid.shape) * np.asarray(grid.spacing)))
    return WORK_SPACING_MM * max(1.0, (litres / WORK_SPACING_MM**3 / WORK_MAX_VOXELS) ** (1 / 3))


def _downsample_hu(vol: Volume, grid: Grid, default_value: float,
                   block: Volume | None = None) -> Volume:
    """``vol`` (HU) on a coarser ``grid``: block-averaged first when much finer, then
    linearly resampled. ``block``: ``block_mean(vol, grid.spacing)`` when already made."""
    if block is None:
        block = block_mean(vol, grid.spacing)
    return resample_to_grid(block, grid, default_value=default_value)


def _work_target(vol: Volume) -> np.ndarray:
    """Per-axis spacing of ``vol``'s working image: its own, or the working spacing where
    that is coarser."""
    return np.maximum(np.asarray(vol.spacing), work_spacing_mm(vol.grid))


def _working_image(vol: Volume, block: Volume | None = None):
    """Float32 HU image clamped to CLAMP_HU at ≥ the working spacing (block averaging and
    Gaussian anti-aliasing where downsampled). ``block``: ``block_mean(vol,
    _work_target(vol))`` when already made."""
    import SimpleITK as sitk

    target = _work_target(vol)
    src = block_mean(vol, target) if block is None else block
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


