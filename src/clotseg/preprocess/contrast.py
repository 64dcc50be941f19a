"""Which of the two scans holds the contrast: a guard against swapped CTA and NCCT files.

A CTA and an NCCT of one head differ where contrast fills the arteries: there the CTA is
150-600 HU and the NCCT shows blood or brain (about 0-90 HU). Given the two files the
other way round, the network reads the contrast lumen as an NCCT hyperdense sign
everywhere and the enhanced CTA it expects is missing, so it marks clots on patent
vessels, with nothing in the numbers to say why. The two scans' voxel values alone do
not tell them apart reliably (a thick NCCT blurs the skull into the 150-600 HU range;
a late-venous CTA has few voxels there), but their voxel-by-voxel difference does.

:func:`contrast_volumes` measures, on one grid, the volume that is contrast-bright on one
scan and soft tissue on the other, and the reverse, away from bone (where slice
thickness and small misalignments put bright voxels of either scan next to tissue of the
other). :func:`swap_note` turns that into a warning when the scan given as NCCT holds the
contrast. It was set on the phantom's 240 cases (both sites, thin and 5 mm NCCTs,
rotated and oblique grids): correct pairs had at least 14.5 mm³ on the CTA side and at
most 1.3 mm³ on the NCCT side, and every swapped pair was named. Written by hand:
no imaging library offers a modality-order check.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume

#: Contrast-filled lumen on a CTA (HU).
CONTRAST_HU = (150.0, 600.0)
#: Blood, brain and clot without contrast (HU).
TISSUE_HU = (-10.0, 90.0)
#: Bone on either scan (HU); above the brightest lumen, as in the alignment check.
BONE_HU = 700.0
#: Distance kept from bone: this plus the coarsest voxel edge of the two scans (mm).
BONE_MARGIN_MM = 4.0
#: The check runs on about this voxel edge (mm), for speed: arteries stay voxels wide.
WORK_MM = 1.0
#: A swap needs at least this much contrast on the NCCT side (mm³) and this many times
#: the CTA side's.
MIN_SWAPPED_MM3 = 5.0
SWAP_RATIO = 4.0


def contrast_volumes(a: np.ndarray, b: np.ndarray, spacing, margin_mm: float
                     ) -> tuple[float, float]:
    """(mm³ bright on ``a`` and tissue on ``b``, mm³ the other way round), more than
    ``margin_mm`` from bone; ``a`` and ``b`` lie on one grid of voxel size ``spacing``.
    The distance to bone is taken on blocks of 2 × 2 × 2 voxels (a block with any bone is
    bone): the margin is several millimetres, and the distance map is the costly step."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    bone = _any_in_pairs((a > BONE_HU) | (b > BONE_HU))
    if bone.any():
        far = ndimage.distance_transform_edt(~bone, sampling=[2 * s for s in spacing]) \
            > margin_mm
        for axis in range(3):
            far = np.repeat(far, 2, axis=axis)
        far = far[: a.shape[0], : a.shape[1], : a.shape[2]].ravel()
    else:
        far = np.ones(a.size, bool)
    voxel = float(np.prod(spacing))

    def only(x: np.ndarray, y: np.ndarray) -> float:
        bright = np.flatnonzero((x >= CONTRAST_HU[0]) & (x <= CONTRAST_HU[1]))  # few
        under = y.ravel()[bright]
        hit = far[bright] & (under >= TISSUE_HU[0]) & (under <= TISSUE_HU[1])
        return float(np.count_nonzero(hit)) * voxel

    return only(a, b), only(b, a)


def _any_in_pairs(mask: np.ndarray) -> np.ndarray:
    """``mask`` at half the resolution: a voxel is set when any of its 2 × 2 × 2 is."""
    padded = np.pad(mask, [(0, n % 2) for n in mask.shape])
    a, b, c = (n // 2 for n in padded.shape)
    return padded.reshape(a, 2, b, 2, c, 2).any(axis=(1, 3, 5))


def work_grid(grid: Grid) -> tuple[Grid, tuple[slice, ...]]:
    """``grid`` thinned to about :data:`WORK_MM` voxels (same origin and direction), and
    the index that takes a volume on ``grid`` onto it."""
    step = tuple(max(1, int(round(WORK_MM / s))) for s in grid.spacing)
    thin = Grid(tuple(-(-n // k) for n, k in zip(grid.shape, step)),
                tuple(s * k for s, k in zip(grid.spacing, step)), grid.origin, grid.direction)
    return thin, tuple(slice(None, None, k) for k in step)


def swap_note(cta: Volume, ncct: Volume, ncct_on_cta: Volume | None = None) -> str | None:
    """A warning text when the scan given as NCCT looks like the contrast scan, else None.

    Both are compared on the finer of their grids, thinned to about 1 mm (a thick scan
    loses thin vessels when sampled the other way); ``ncct_on_cta``, the NCCT already on
    the CTA grid, is used as it is when the CTA's grid is the finer.
    """
    from clotseg.preprocess.ncct import AIR_HU
    from clotseg.preprocess.resample import resample_to_grid

    cta_finer = np.prod(cta.spacing) <= np.prod(ncct.spacing)
    fine, other = (cta, ncct) if cta_finer else (ncct, cta)
    grid, view = work_grid(fine.grid)
    if cta_finer and ncct_on_cta is not None:
        other_arr = np.asarray(ncct_on_cta.array)[view]
    else:
        other_arr = resample_to_grid(other, grid, interpolation="linear",
                                     default_value=AIR_HU).array
    fine_arr = np.asarray(fine.array)[view]
    a, b = (fine_arr, other_arr) if cta_finer else (other_arr, fine_arr)
    margin = BONE_MARGIN_MM + max(*cta.spacing, *ncct.spacing)
    on_cta_side, on_ncct_side = contrast_volumes(a, b, grid.spacing, margin)
    if on_ncct_side < MIN_SWAPPED_MM3 or on_ncct_side <= SWAP_RATIO * on_cta_side:
        return None
    return (f"CTA and NCCT look swapped: {on_ncct_side:.0f} mm³ is contrast-bright "
            f"({CONTRAST_HU[0]:g}-{CONTRAST_HU[1]:g} HU) on the NCCT where the CTA shows "
            f"soft tissue, and {on_cta_side:.0f} mm³ the other way round; check which "
            "file is which (a swapped pair is segmented as nonsense)")
