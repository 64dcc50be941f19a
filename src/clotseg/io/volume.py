"""The one in-memory image type: a voxel array that carries its geometry.

Axis order (used everywhere in clotseg)
---------------------------------------
``Volume.array`` is indexed ``[i, j, k]`` in ITK *index order*: ``i`` runs fastest in the
file (the "x"/column axis of a DICOM slice), ``k`` is the slice index of the stored
volume. ``spacing`` is given in the same order, in millimetres. ``direction`` is a 3x3
matrix whose **columns** are the unit vectors of the ``i``, ``j`` and ``k`` axes in
patient coordinates, and ``origin`` is the centre of voxel ``[0, 0, 0]``. Patient
coordinates are **LPS** (x to the patient's left, y to posterior, z to superior), as in
ITK, SimpleITK and DICOM; NIfTI's RAS is converted by the reader/writer (SimpleITK) only.

The physical point of index ``v`` is ``origin + direction @ (spacing * v)``. This is the same
convention as the original research layout (``[x, y, slice]``) and nibabel, and the
transpose of what ``SimpleITK.GetArrayFromImage`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

#: Tolerances for "same grid": spacing/origin in mm, direction cosines unitless.
GRID_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Grid:
    """Geometry of a voxel grid without its voxels: size, spacing, origin, direction."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major 3x3; columns are axis directions

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def affine(self) -> np.ndarray:
        """4x4 index-to-LPS matrix."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(np.prod(self.spacing))

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Map (N, 3) continuous indices to (N, 3) LPS points in mm."""
        idx = np.atleast_2d(np.asarray(index, dtype=float))
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) LPS points in mm to (N, 3) continuous indices."""
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        return (pts - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def same_as(self, other: Grid, atol_mm: float = GRID_ATOL_MM) -> bool:
        """True when both grids have the same size, spacing, origin and direction."""
        return not self.differences(other, atol_mm)

    def differences(self, other: Grid, atol_mm: float = GRID_ATOL_MM) -> list[str]:
        """Human-readable list of what differs between two grids (empty if identical)."""
        out = []
        if tuple(self.shape) != tuple(other.shape):
            out.append(f"size {tuple(self.shape)} vs {tuple(other.shape)}")
        if not np.allclose(self.spacing, other.spacing, atol=atol_mm, rtol=0):
            out.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm")
        if not np.allclose(self.origin, other.origin, atol=atol_mm * 10, rtol=0):
            out.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)} mm")
        if not np.allclose(self.direction, other.direction, atol=DIRECTION_ATOL, rtol=0):
            out.append("direction differs")
        return out

    def axial_axis(self) -> int:
        """Array axis (0, 1 or 2) closest to the patient's superior-inferior axis.

        Slices are taken perpendicular to this axis: it comes from the direction matrix,
        not from "the last array axis", so flipped and permuted volumes slice correctly.
        """
        return int(np.argmax(np.abs(self.direction_matrix[2, :])))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned LPS bounding box (min, max) of the voxel centres."""
        corners = np.array(
            [[a, b, c] for a in (0, self.shape[0] - 1) for b in (0, self.shape[1] - 1)
             for c in (0, self.shape[2] - 1)],
            dtype=float,
        )
        pts = self.index_to_physical(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def overlaps(self, other: Grid) -> bool:
        """True when the physical bounding boxes of two grids intersect."""
        lo1, hi1 = self.bounds()
        lo2, hi2 = other.bounds()
        return bool(np.all(lo1 <= hi2) and np.all(lo2 <= hi1))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@dataclass(frozen=True)
class Volume:
    """A 3D array with its patient geometry (see module docstring for conventions)."""

    array: np.ndarray = field(repr=False)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array, got shape {self.array.shape}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        d = np.asarray(self.direction, dtype=float).reshape(-1)
        if d.size != 9:
            raise ValueError("direction must have 9 values (3x3 matrix)")
        object.__setattr__(self, "direction", tuple(float(v) for v in d))
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.spacing, self.origin, self.direction)

    @property
    def direction_matrix(self) -> np.ndarray:
        return self.grid.direction_matrix

    @property
    def affine(self) -> np.ndarray:
        return self.grid.affine

    @property
    def voxel_volume(self) -> float:
        return self.grid.voxel_volume

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, other voxels (shape must match)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"shape {array.shape} does not match volume shape {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    @classmethod
    def on_grid(cls, array: np.ndarray, grid: Grid) -> Volume:
        """Build a volume from an array and a grid of the same shape."""
        if tuple(array.shape) != tuple(grid.shape):
            raise ValueError(f"shape {array.shape} does not match grid {grid.shape}")
        return cls(array, grid.spacing, grid.origin, grid.direction)

    # --- SimpleITK bridge (the only place the array is transposed) -------------------
    def to_sitk(self) -> sitk.Image:
        import SimpleITK as sitk

        arr = np.ascontiguousarray(self.array.transpose(2, 1, 0))
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("expected a scalar image, got a multi-component (vector/RGB) image")
        arr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        return cls(arr, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
