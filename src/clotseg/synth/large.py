"""Rendering the phantom on grids of clinical size, and thick-slice reconstruction.

A head CTA of 512 × 512 × 300–400 voxels is 80–100 million voxels; evaluating every
tissue field and the vessel tree at each of them (what :mod:`clotseg.synth.phantom` does
for its small regions of interest) would take minutes and many gigabytes. Almost all of
that volume is smooth (brain, skull, air), and everything small (vessels, clot, plaques,
clinoid processes) lies within a few centimetres of the Circle of Willis. So a large grid
is rendered in two parts:

* the whole field of view on a **coarse grid** (same origin and direction, every
  ``f``-th voxel, ≈ 2 mm), linearly interpolated onto the full grid;
* the **box around the vessel tree** (plus a margin) at full resolution, blended into it
  with a linear ramp at the box's edges so that no seam is visible.

Thick slices (an NCCT reconstructed at 2.5–5 mm) are made as a scanner makes them: the
anatomy is sampled on thin sub-slices and each thick slice is the mean of its
sub-slices (a box slice profile).

Hand-written: no library renders an analytic phantom at two resolutions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from clotseg.io.volume import Grid

#: Grids with more voxels than this are rendered coarse + fine.
LARGE_VOXELS = 24_000_000
#: Voxel size (mm) of the coarse grid, margin (mm) of the full-resolution box around the
#: vessel tree and width (mm) of the blending ramp at its edges.
COARSE_MM = 2.0
TREE_MARGIN_MM = 8.0
RAMP_MM = 4.0
#: Thin sub-slices per thick slice are at most this thick (mm).
SUBSLICE_MM = 0.7

#: What a renderer returns: CTA HU, NCCT HU, clot occupancy, labels (all on the grid).
Rendered = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def is_large(grid: Grid) -> bool:
    return int(np.prod(grid.shape)) > LARGE_VOXELS


def sub_grid(grid: Grid, start, stop) -> Grid:
    """The part ``[start, stop)`` (index box) of ``grid``, geometry unchanged."""
    start = np.asarray(start, int)
    origin = grid.index_to_physical(start.astype(float))[0]
    return Grid(tuple(int(b - a) for a, b in zip(start, stop)), grid.spacing,
                tuple(float(o) for o in origin), grid.direction)


def coarse_grid(grid: Grid, factors) -> Grid:
    """Every ``factors[a]``-th voxel of ``grid`` (same origin), one more beyond the end so
    that linear interpolation covers every fine voxel."""
    f = np.asarray(factors, int)
    shape = (np.asarray(grid.shape) - 1) // f + 2
    return Grid(tuple(int(s) for s in shape), tuple(float(s) for s in np.asarray(grid.spacing) * f),
                grid.origin, grid.direction)


def upsample_linear(coarse: np.ndarray, factors, shape) -> np.ndarray:
    """Separable linear interpolation of samples at every ``factors[a]``-th index onto
    every index of ``shape`` (float32; at most two full-size arrays alive at a time).
    The last array axis is done first and the first axis last, so that the one pass at
    full size gathers whole contiguous planes."""
    out = np.asarray(coarse, np.float32)
    for ax in reversed(range(out.ndim)):
        f, n = int(factors[ax]), int(shape[ax])
        i = np.arange(n)
        i0 = i // f
        w = ((i - i0 * f) / f).astype(np.float32)
        bshape = [1] * out.ndim
        bshape[ax] = n
        lo = np.take(out, i0, axis=ax)
        if f > 1:
            hi = np.take(out, i0 + 1, axis=ax)
            np.subtract(hi, lo, out=hi)
            hi *= w.reshape(bshape)
            lo += hi
            del hi
        out = lo
    return out


def upsample_nearest(coarse: np.ndarray, factors, shape) -> np.ndarray:
    """Nearest-sample upsampling of a label array (same index convention): index ``i``
    takes coarse sample ``(i + f // 2) // f`` (one gather per axis, the first axis last)."""
    out = coarse
    for ax in reversed(range(coarse.ndim)):
        f, n = int(factors[ax]), int(shape[ax])
        out = np.take(out, (np.arange(n) + f // 2) // f, axis=ax)
    return np.ascontiguousarray(out)


def _ramp(n: int, width: int, at_start: bool, at_stop: bool) -> np.ndarray:
    """Blend weight along one box axis: 0 → 1 over ``width`` voxels at edges that lie
    inside the volume, 1 at edges on the volume's border."""
    i = np.arange(n, dtype=np.float32)
    w = np.ones(n, np.float32)
    if width > 0:
        if at_start:
            w = np.minimum(w, (i + 0.5) / width)
        if at_stop:
            w = np.minimum(w, (n - i - 0.5) / width)
    return np.clip(w, 0.0, 1.0)


def detail_box(grid: Grid, points_lps: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Index box ``[start, stop)`` of ``grid`` rendered at full resolution: the points
    (the vessel tree, LPS mm) plus :data:`TREE_MARGIN_MM`, in whole groups of ``k``
    slices along the slice axis."""
    sp, shape = np.asarray(grid.spacing), np.asarray(grid.shape)
    ax = grid.axial_axis()
    idx = grid.physical_to_index(np.atleast_2d(points_lps))
    pad = TREE_MARGIN_MM / sp
    start = np.clip(np.floor(idx.min(0) - pad), 0, shape - 1).astype(int)
    stop = np.clip(np.ceil(idx.max(0) + pad) + 1, start + 1, shape).astype(int)
    start[ax], stop[ax] = start[ax] // k * k, -(-stop[ax] // k) * k  # whole thick slices
    return start, stop


def render_large(render: Callable[[Grid], Rendered], grid: Grid, points_lps: np.ndarray,
                 ncct_only: bool = False, k: int = 1) -> Rendered:
    """Coarse whole-grid render plus a full-resolution box around ``points_lps`` (the
    vessel tree, LPS mm on ``grid``); see the module docstring. Clot occupancy is only
    rendered in the box (the clot lies on the tree) and returned as a bool array.

    ``ncct_only``: only the NCCT is wanted (the other arrays are returned as None).
    ``k > 1`` (with ``ncct_only``): ``grid`` holds thin sub-slices and the NCCT comes back
    as the mean of every ``k`` of them along the slice axis (thick slices). Averaging
    commutes with the in-plane interpolation, so the coarse part is averaged before it is
    brought to full in-plane resolution.
    """
    if k > 1 and not ncct_only:
        raise ValueError("thick slices are made for the NCCT only")
    sp, shape = np.asarray(grid.spacing), np.asarray(grid.shape)
    ax = grid.axial_axis()
    factors = np.maximum(1, np.round(COARSE_MM / sp)).astype(int)
    c_cta, c_ncct, _, c_lab = render(coarse_grid(grid, factors))
    out_shape = shape.copy()
    out_shape[ax] //= k
    if k > 1:
        along, across = np.ones(3, int), factors.copy()
        along[ax], across[ax] = factors[ax], 1
        thin = np.array(c_ncct.shape)
        thin[ax] = shape[ax]
        c_ncct = slab_average(upsample_linear(c_ncct, along, thin), ax, k)
        ncct = upsample_linear(c_ncct, across, out_shape)
    else:
        ncct = upsample_linear(c_ncct, factors, shape)
    del c_ncct
    cta = labels = occ = None
    if not ncct_only:
        cta = upsample_linear(c_cta, factors, shape)
        labels = upsample_nearest(c_lab, factors, shape)
        occ = np.zeros(grid.shape, bool)
    del c_cta, c_lab
    start, stop = detail_box(grid, points_lps, k)
    f_cta, f_ncct, f_occ, f_lab = render(sub_grid(grid, start, stop))
    if k > 1:
        f_ncct = slab_average(f_ncct, ax, k)
        start[ax], stop[ax] = start[ax] // k, stop[ax] // k
    out_sp = sp.copy()
    out_sp[ax] *= k
    width = np.ceil(RAMP_MM / out_sp).astype(int)
    ramps = [_ramp(int(b - a), int(wd), a > 0, b < n)
             for a, b, wd, n in zip(start, stop, width, out_shape)]
    w = ramps[0][:, None, None] * ramps[1][None, :, None] * ramps[2][None, None, :]
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    ncct[box] = ncct[box] * (1 - w) + f_ncct * w
    if not ncct_only:
        cta[box] = cta[box] * (1 - w) + f_cta * w
        labels[box] = np.where(w >= 0.5, f_lab, labels[box])
        occ[box] = (np.asarray(f_occ) >= 0.5) & (w >= 0.5)
    return cta, ncct, occ, labels


def thick_grid(grid: Grid, thickness_mm: float) -> Grid:
    """``grid`` reconstructed at contiguous slices of ``thickness_mm`` along its slice
    (axial) axis, covering the same extent about the same centre."""
    ax = grid.axial_axis()
    sp, shape = np.asarray(grid.spacing, float), np.asarray(grid.shape)
    d = grid.direction_matrix
    centre = np.asarray(grid.origin) + d @ (sp * (shape - 1) / 2.0)
    new_sp, new_shape = sp.copy(), shape.copy()
    new_sp[ax] = float(thickness_mm)
    new_shape[ax] = max(1, int(round(shape[ax] * sp[ax] / thickness_mm)))
    origin = centre - d @ (new_sp * (new_shape - 1) / 2.0)
    return Grid(tuple(int(s) for s in new_shape), tuple(float(s) for s in np.round(new_sp, 4)),
                tuple(float(v) for v in origin), grid.direction)


def subslice_grid(grid: Grid) -> tuple[Grid, int]:
    """Thin sub-slices of a thick-slice grid: ``k`` per slice, centred in it, at most
    :data:`SUBSLICE_MM` apart; returns (thin grid, k)."""
    ax = grid.axial_axis()
    sp, shape = np.asarray(grid.spacing, float), np.asarray(grid.shape)
    k = max(1, int(np.ceil(sp[ax] / SUBSLICE_MM)))
    thin_sp, thin_shape = sp.copy(), shape.copy()
    thin_sp[ax] = sp[ax] / k
    thin_shape[ax] = shape[ax] * k
    step = np.zeros(3)
    step[ax] = -(sp[ax] - thin_sp[ax]) / 2.0  # first sub-slice centre in thick slice 0
    origin = np.asarray(grid.origin) + grid.direction_matrix @ step
    return Grid(tuple(int(s) for s in thin_shape), tuple(float(s) for s in thin_sp),
                tuple(float(v) for v in origin), grid.direction), k


def slab_average(thin: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Mean of each run of ``k`` sub-slices along ``axis`` (float32)."""
    a = np.moveaxis(np.asarray(thin, np.float32), axis, 0)
    out = a.reshape(a.shape[0] // k, k, *a.shape[1:]).mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))
