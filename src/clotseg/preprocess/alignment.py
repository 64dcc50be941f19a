"""Whether two CT volumes of one head line up: the check run after registration.

Alignment check
---------------
:func:`alignment_check` measures, on one grid, the normalised mutual information
(Studholme, (H(A) + H(B)) / H(A, B), 1 = independent, 2 = identical) and the mean symmetric
distance between the bone surfaces (> 700 HU, above the brightest contrast lumen so vessels
do not count as bone) and between the head/air outlines (> -300 HU) of both images. A pair
counts as aligned when that surface distance is at most ``max(1.5 mm, 0.75 × the coarsest
voxel spacing)``; otherwise :func:`verdict` says how far apart they are.
:mod:`clotseg.preprocess.register` runs it on its working grid before and after
registering (:func:`check_on_work_grid`).

Split from :mod:`clotseg.preprocess.register`, which imports this module (never the
other way round).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.resample import reference_image, resample_to_grid
from clotseg.preprocess.transforms import transform_to_dict

CLAMP_HU = (-100.0, 1500.0)
BONE_HU = 700.0
OUTLINE_HU = -300.0
MIN_SURFACE_TOL_MM = 1.5


def check_on_work_grid(work_grid: Grid, fixed: Volume, moving_ncct: Volume, transform: Any,
                       default_value: float) -> dict:
    """Alignment check on the working CTA grid (≥ 1 mm, cheap), in HU; ``fixed`` is the
    CTA already on that grid, ``transform`` maps its points to NCCT points."""
    import SimpleITK as sitk

    moved = resample_to_grid(moving_ncct, work_grid, transform=transform,
                             interpolation="linear", default_value=default_value)
    ones = moving_ncct.with_array(np.ones(moving_ncct.shape, np.uint8)).to_sitk()
    valid = sitk.Resample(ones, reference_image(work_grid), transform,
                          sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return alignment_check(fixed, moved, valid=Volume.from_sitk(valid).array > 0,
                           spacing_hint=max(moving_ncct.spacing))


def verdict(check: dict, tx) -> tuple[bool, str]:
    """(aligned?, one-line message naming the motion and the surface distance) for a
    registration's transform ``tx`` and its :func:`check_on_work_grid` result."""
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


def alignment_check(fixed: Volume, moving_on_fixed_grid: Volume, *,
                    valid: np.ndarray | None = None, spacing_hint: float | None = None,
                    tolerance_mm: float | None = None) -> dict:
    """How well two CT volumes on one grid line up (see the module docstring).

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
