"""Volumes on the CTA's grid: reading a file's geometry and writing with it checked.

Every mask, probability or image clotseg writes for a case must overlay the CTA voxel for
voxel. :func:`write_on_grid` writes a volume under a temporary name, reads the geometry
back from the file's header (:func:`file_grid`) and gives the file its name only when it
matches the CTA's exactly, so a wrong grid in memory and a writer's round-off are both
caught before anything is left behind. :func:`cta_grid_on_disk` is the grid to compare
with: the CTA's as stored, not as read into memory.

These are I/O helpers for every layer above (``predict``, ``measure``, ``export-nnunet``,
the spacing of a dataset); they read headers through SimpleITK, loaded on first use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path
from clotseg.io.volume import Grid, Volume

__all__ = ["check_grid", "cta_grid_on_disk", "file_grid", "write_on_grid"]


def file_grid(path: str | Path) -> Grid:
    """Geometry stored in a volume file's header (nothing else is read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    size, spacing, origin = reader.GetSize(), reader.GetSpacing(), reader.GetOrigin()
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return Grid(tuple(int(s) for s in size[:3]), tuple(spacing[:3]), tuple(origin[:3]),
                tuple(direction.ravel()))


def cta_grid_on_disk(path: Path | None, loaded: Volume) -> Grid:
    """The CTA's grid as stored: from the file header for volume files, else (DICOM
    series, ``.npy``) the grid it was read with."""
    from clotseg.io.readers import volume_suffix

    if path is not None and path.is_file() and volume_suffix(path):
        return file_grid(path)
    return loaded.grid


def check_grid(grid: Grid, cta: Grid, what: str) -> None:
    """Refuse anything that would not overlay the CTA voxel for voxel (``cta``: the
    reference grid, the NCCT's for a case without a CTA)."""
    if not grid.same_as(cta):
        raise ClotsegError(f"{what}: grid differs from the scan's it belongs to "
                           f"({'; '.join(grid.differences(cta))}); not written")


def write_on_grid(vol: Volume, path: Path, cta: Grid, *, mask: bool) -> Path:
    """Write ``vol`` atomically, after checking that the file as written has exactly the
    CTA's geometry (catches a wrong grid in memory and writer round-off alike)."""
    from clotseg.io.readers import write_volume

    check_grid(vol.grid, cta, str(path))
    with atomic_path(path) as tmp:
        write_volume(vol, tmp, mask=mask)
        check_grid(file_grid(tmp), cta, str(path))
    return path
