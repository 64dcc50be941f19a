"""Resampling volumes onto another grid or spacing (SimpleITK), and grid helpers.

Interpolation choices
---------------------
* ``"linear"`` (images, default) and ``"bspline"`` (3rd order, sharper, may overshoot) are
  computed in float32; integer images (HU stored as int16) are rounded back to their type
  and clipped to its range, so a CT stays an integer-HU CT.
* ``"nearest"`` copies the nearest voxel (any dtype, exact values).
* ``"label"`` is for masks. For a binary mask it interpolates the 0/1 mask linearly and keeps
  voxels whose interpolated value is ≥ 0.5, i.e. voxels whose centre lies inside the
  linearly interpolated object boundary. This is symmetric (resampling there and back
  returns nearly the same mask), keeps the clot's volume unbiased, and is far cheaper than
  SimpleITK's label-Gaussian interpolator, which we use only for masks with several labels
  (where averaging label numbers would be meaningless). The result is uint8.
"""

from __future__ import annotations

import numpy as np

from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.transforms import as_sitk_transform

INTERPOLATIONS = ("linear", "bspline", "nearest", "label")


def reference_image(grid: Grid):
    """An empty SimpleITK image carrying ``grid`` (the output geometry of a resample)."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in grid.shape], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in grid.spacing])
    ref.SetOrigin([float(o) for o in grid.origin])
    ref.SetDirection([float(d) for d in grid.direction])
    return ref


def resample_to_grid(vol: Volume, grid: Grid, *, transform=None, interpolation: str = "linear",
                     default_value: float = 0.0) -> Volume:
    """Resample ``vol`` onto ``grid``.

    ``transform`` maps points of ``grid`` (the fixed space) into ``vol``'s physical space, as
    returned by :func:`clotseg.preprocess.register.register_rigid` (a SimpleITK transform or
    its dictionary, :mod:`clotseg.preprocess.transforms`); ``None`` means identity. Points outside ``vol`` get ``default_value``.
    """
    import SimpleITK as sitk

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from "
                         f"{', '.join(INTERPOLATIONS)}")
    _check_output_size(vol, grid)
    tx = as_sitk_transform(transform)
    ref = reference_image(grid)
    arr = np.asarray(vol.array)
    if interpolation == "label":
        return _resample_label(vol, ref, tx)
    if interpolation == "nearest":
        src = vol.to_sitk()
        out = sitk.Resample(src, ref, tx, sitk.sitkNearestNeighbor, float(default_value),
                            src.GetPixelID())
        res = Volume.from_sitk(out)
        return res.with_array(res.array.astype(arr.dtype, copy=False))
    src = vol.with_array(arr.astype(np.float32, copy=False)).to_sitk()
    method = sitk.sitkLinear if interpolation == "linear" else sitk.sitkBSpline
    out = sitk.Resample(src, ref, tx, method, float(default_value), sitk.sitkFloat32)
    del src
    if arr.dtype.kind in "iu":
        return _integer_volume(out, arr.dtype)
    out = Volume.from_sitk(out)
    return out.with_array(_cast_like(out.array, arr.dtype))


def _check_output_size(vol: Volume, grid: Grid) -> None:
    """Refuse a resample whose float32 output would pass the volume size limit (the one
    reading obeys, :func:`clotseg.io.readers.max_volume_bytes`): a header whose spacing
    is too coarse by a unit slip makes a grid of billions of voxels at a model's spacing,
    and the allocation would take the machine's memory rather than fail cleanly."""
    from clotseg.errors import ClotsegError
    from clotseg.io.limits import max_volume_bytes, size_text

    nbytes = 4 * int(np.prod(np.asarray(grid.shape, dtype=np.int64)))
    limit = max_volume_bytes()
    if nbytes > limit:
        extent = " x ".join(f"{v:.0f}" for v in np.asarray(vol.shape) * np.asarray(vol.spacing))
        raise ClotsegError(
            f"resampling a {' x '.join(map(str, vol.shape))} volume of "
            f"{' x '.join(f'{v:.4g}' for v in vol.spacing)} mm voxels ({extent} mm) onto "
            f"{' x '.join(f'{v:.4g}' for v in grid.spacing)} mm voxels would make "
            f"{' x '.join(map(str, grid.shape))} voxels ({size_text(nbytes)}), above the "
            f"{size_text(limit)} limit: check the voxel spacing in the header (raise the limit "
            "with CLOTSEG_MAX_VOLUME_GB if the scan is genuine)")


def _integer_volume(image, dtype: np.dtype) -> Volume:
    """A float32 SimpleITK image as a Volume of integer ``dtype`` (rounded, clipped), the
    values of :func:`_cast_like`, converted a slab at a time from a view of the image:
    at clinical size (100 million voxels) a whole-volume ``rint``/``clip`` would hold two
    more float32 copies of it."""
    import SimpleITK as sitk

    view = sitk.GetArrayViewFromImage(image)  # [k, j, i]; valid while ``image`` lives
    out = np.empty(view.shape, dtype)
    info = np.iinfo(dtype)
    step = max(1, 4_000_000 // max(1, int(np.prod(view.shape[1:]))))
    for a in range(0, view.shape[0], step):
        out[a:a + step] = np.clip(np.rint(view[a:a + step]), info.min, info.max)
    del view
    return Volume(out.transpose(2, 1, 0), image.GetSpacing(), image.GetOrigin(),
                  image.GetDirection())


def _resample_label(vol: Volume, ref, tx) -> Volume:
    import SimpleITK as sitk

    arr = np.asarray(vol.array)
    labels = np.unique(arr)
    if labels.size <= 2 and set(labels.tolist()) <= {0, 1}:
        src = vol.with_array((arr > 0).astype(np.float32)).to_sitk()
        out = sitk.Resample(src, ref, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        res = Volume.from_sitk(out)
        return res.with_array((res.array >= 0.5).astype(np.uint8))
    src = vol.with_array(arr.astype(np.uint8)).to_sitk()
    out = sitk.Resample(src, ref, tx, sitk.sitkLabelGaussian, 0.0, sitk.sitkUInt8)
    return Volume.from_sitk(out)


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the source dtype: round and clip for integers, plain cast for floats."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return values >= 0.5
    return values.astype(dtype, copy=False)


def block_mean(vol: Volume, target_mm) -> Volume:
    """``vol`` averaged over blocks of ``floor(target / spacing)`` voxels per axis
    (float32) when that is at least 2 somewhere, else ``vol`` itself: a cheap first
    anti-aliasing step before a fine, large scan (0.4 mm, 512² × 300) is brought to a
    coarse working grid, which makes the Gaussian and the resampling after it several
    times cheaper. Each block's value sits at its centre, so the geometry is kept
    (a partial block at the far edge is dropped). Hand-written: it is one reshape."""
    f = np.asarray(block_factors(vol.spacing, target_mm))
    if f.max() < 2:
        return vol
    arr = np.asarray(vol.array)
    n = np.asarray(arr.shape) // f
    a = arr[:n[0] * f[0], :n[1] * f[1], :n[2] * f[2]]
    a = a.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float32)
    origin = vol.grid.index_to_physical((f - 1) / 2.0)[0]
    return Volume.on_grid(a, Grid(tuple(int(v) for v in n),
                                  tuple(float(v) for v in np.asarray(vol.spacing) * f),
                                  tuple(float(v) for v in origin), vol.grid.direction))


def block_factors(spacing, target_mm) -> tuple[int, int, int]:
    """Voxels per block and axis that :func:`block_mean` averages: ``floor(target /
    spacing)``, at least 1."""
    f = np.maximum(1, np.floor(np.asarray(target_mm, float) / np.asarray(spacing, float)
                               + 1e-6)).astype(int)
    return tuple(int(v) for v in f)


def grid_with_spacing(grid: Grid, spacing) -> Grid:
    """A grid with the same origin and direction covering the same physical extent
    (``shape * spacing`` per axis, rounded to whole voxels) at another spacing."""
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    extent = np.asarray(grid.shape) * np.asarray(grid.spacing)
    shape = tuple(int(max(1, round(e / s))) for e, s in zip(extent, spacing))
    return Grid(shape, spacing, grid.origin, grid.direction)


def resample_to_spacing(vol: Volume, spacing, interpolation: str = "linear",
                        default_value: float = 0.0) -> Volume:
    """Resample to ``spacing`` keeping origin, direction and physical extent."""
    return resample_to_grid(vol, grid_with_spacing(vol.grid, spacing),
                            interpolation=interpolation, default_value=default_value)


def grid_to_dict(grid: Grid) -> dict:
    """JSON-serialisable description of a grid (inverse: :func:`grid_from_dict`)."""
    return {"shape": [int(s) for s in grid.shape], "spacing": [float(s) for s in grid.spacing],
            "origin": [float(o) for o in grid.origin],
            "direction": [float(d) for d in grid.direction]}


def grid_from_dict(data: dict) -> Grid:
    return Grid(tuple(int(s) for s in data["shape"]), tuple(float(s) for s in data["spacing"]),
                tuple(float(o) for o in data["origin"]),
                tuple(float(d) for d in data["direction"]))
