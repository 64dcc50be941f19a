"""Resampling volumes onto another grid or spacing (SimpleITK).

Images use linear (or B-spline) interpolation. Masks use SimpleITK's label-Gaussian
interpolator, which keeps labels binary while following the object's smooth boundary
better than nearest neighbour when the grids differ by more than a permutation.
"""

from __future__ import annotations

import numpy as np

from clotseg.io.volume import Grid, Volume

_INTERP = {"linear": "sitkLinear", "bspline": "sitkBSpline", "nearest": "sitkNearestNeighbor",
           "label": "sitkLabelGaussian"}


def _reference(grid: Grid):
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in grid.shape], sitk.sitkUInt8)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(grid.direction)
    return ref


def resample_to_grid(vol: Volume, grid: Grid, *, transform=None, interpolation: str = "linear",
                     default_value: float = 0.0) -> Volume:
    """Resample ``vol`` onto ``grid``; ``transform`` maps grid points into ``vol``'s space
    (a SimpleITK transform, as returned by registration)."""
    import SimpleITK as sitk

    if interpolation not in _INTERP:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    img = vol.to_sitk()
    out = sitk.Resample(img, _reference(grid), transform or sitk.Transform(),
                        getattr(sitk, _INTERP[interpolation]), float(default_value),
                        img.GetPixelID())
    res = Volume.from_sitk(out)
    if interpolation == "label":
        res = res.with_array((np.asarray(res.array) > 0).astype(np.uint8))
    return res


def grid_with_spacing(grid: Grid, spacing) -> Grid:
    """A grid with the same origin, direction and physical extent at another spacing."""
    extent = (np.asarray(grid.shape) - 1) * np.asarray(grid.spacing)
    shape = tuple(int(max(1, round(e / s) + 1)) for e, s in zip(extent, spacing))
    return Grid(shape, tuple(float(s) for s in spacing), grid.origin, grid.direction)


def resample_to_spacing(vol: Volume, spacing, interpolation: str = "linear",
                        default_value: float = 0.0) -> Volume:
    """Resample to ``spacing`` keeping origin, direction and physical extent."""
    return resample_to_grid(vol, grid_with_spacing(vol.grid, spacing),
                            interpolation=interpolation, default_value=default_value)
