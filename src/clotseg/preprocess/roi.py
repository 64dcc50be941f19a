"""Region of interest around the Circle of Willis, and exact crop/uncrop.

A :class:`Box` is an index-space box on a volume's grid (``start`` inclusive, ``stop``
exclusive, per array axis). Cropping keeps the geometry: the cropped volume's origin is the
physical point of ``start``, so every voxel stays where it was in patient space, and
:func:`uncrop` puts it back voxel for voxel.

``auto`` mode finds the Circle of Willis without a mask (the original research code drew
this ROI by hand in 3D Slicer). The idea: the Circle of Willis is the densest cluster of
large contrast-filled arteries in the head, and it sits on the head's midline. On a coarse
(2 mm) copy of the CTA resampled to patient axes (L, P, S) we

1. take voxels of 100–600 HU inside the head: contrast lumen ("good opacification" starts
   at 150 HU, Kim 2010; 100 because 2–3 mm arteries lose contrast to partial
   volume at 2 mm), below dense bone;
2. drop everything within 4 mm of bone (> 700 HU): bone edges and the skull's diploe fall
   in the same HU range through partial volume, and the venous sinuses lie against the
   skull;
3. reduce the lumen to its centreline skeleton weighted by how horizontal each vessel runs
   (the circle's M1, A1, P1 and communicating arteries are horizontal; the carotid siphons,
   basilar artery and sinuses are not), and smooth it with an 8 mm Gaussian: a local
   density of horizontal arterial length;
4. left-right: the head's mirror plane, searched around the centre of the head (largest
   > -300 HU component). An occluded side has fainter arteries beyond the clot, so a
   density peak would drift to the healthy side and the box could miss the very clot it is
   for;
5. front-back and up-down: the maximum of the density summed over a ±30 mm slab around
   the midline, weighted by a broad prior around the head's centre (σ 35 mm), so that a
   large vessel in the neck or the venous confluence at the back does not win.

On whole-head phantoms the estimate lies a median 3 mm from the true centre.

A fixed physical box (``size_mm``) is used instead of a tight one so that every case of a
dataset gets a comparable field of view, like the original's atlas-matched ROIs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume

#: HU thresholds and lengths of the ``auto`` detector (see module docstring).
LUMEN_HU = (100.0, 600.0)
BONE_HU = 700.0
BONE_GUARD_MM = 4.0
DENSITY_SIGMA_MM = 8.0
PRIOR_SIGMA_MM = 35.0
WORK_SPACING_MM = 2.0
MIDLINE_SLAB_MM = 30.0
MIDLINE_SEARCH_MM = 40.0
MIDLINE_MIN_WIDTH_MM = 30.0
HEAD_HU = -300.0


@dataclass(frozen=True)
class Box:
    """Index box ``[start, stop)`` per array axis of a grid."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", tuple(int(s) for s in self.start))
        object.__setattr__(self, "stop", tuple(int(s) for s in self.stop))
        if len(self.start) != 3 or len(self.stop) != 3:
            raise ValueError("a box needs three start and three stop indices")
        if any(b <= a for a, b in zip(self.start, self.stop)):
            raise ValueError(f"empty box {self.start}..{self.stop}")

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore

    @classmethod
    def full(cls, shape) -> Box:
        return cls((0, 0, 0), tuple(int(s) for s in shape))

    def contains_all(self, mask: np.ndarray) -> bool:
        """True when every non-zero voxel of ``mask`` (full-grid array) is inside the box."""
        inside = np.asarray(mask)[self.slices] != 0
        return int(inside.sum()) == int(np.count_nonzero(mask))

    def to_dict(self) -> dict:
        return {"start": list(self.start), "stop": list(self.stop)}

    @classmethod
    def from_dict(cls, data: dict) -> Box:
        return cls(tuple(data["start"]), tuple(data["stop"]))


def crop_grid(grid: Grid, box: Box) -> Grid:
    """The grid of the voxels inside ``box``."""
    _check_inside(box, grid.shape)
    origin = grid.index_to_physical(np.asarray(box.start, dtype=float))[0]
    return Grid(box.size, grid.spacing, tuple(float(o) for o in origin), grid.direction)


def crop(vol: Volume, box: Box) -> Volume:
    """The sub-volume inside ``box`` with its origin moved so geometry is unchanged."""
    grid = crop_grid(vol.grid, box)
    return Volume.on_grid(np.ascontiguousarray(np.asarray(vol.array)[box.slices]), grid)


def uncrop(vol: Volume, box: Box, full_grid: Grid, fill: float = 0) -> Volume:
    """Put a cropped volume back into ``full_grid`` (outside the box: ``fill``)."""
    expected = crop_grid(full_grid, box)
    if not vol.grid.same_as(expected, atol_mm=1e-4):
        raise ValueError("volume does not lie on the crop box of the full grid ("
                         + "; ".join(vol.grid.differences(expected, atol_mm=1e-4)) + ")")
    out = np.full(full_grid.shape, fill, dtype=np.asarray(vol.array).dtype)
    out[box.slices] = vol.array
    return Volume.on_grid(out, full_grid)


def _check_inside(box: Box, shape) -> None:
    if any(a < 0 for a in box.start) or any(b > s for b, s in zip(box.stop, shape)):
        raise ValueError(f"box {box.start}..{box.stop} exceeds the grid {tuple(shape)}")


def roi_box(cta: Volume, *, mode: str = "auto", mask: Volume | None = None,
            size_mm: float | tuple[float, float, float] = 120.0,
            margin_mm: float = 0.0) -> Box:
    """Crop box on the CTA grid: ``size_mm`` (a cube, or L-R, A-P, S-I lengths) plus
    ``margin_mm`` on every side, clipped to the volume.

    ``mode``: ``"none"`` the whole volume; ``"mask"`` centred on the mask's bounding box and
    grown to hold the whole mask plus the margin (an empty or missing mask falls back to
    ``auto`` with a warning); ``"auto"`` centred on the Circle of Willis found from the CTA
    alone (module docstring).
    """
    if mode == "none":
        return Box.full(cta.shape)
    size = _size_per_axis(cta.grid, size_mm)
    if mode == "mask" and mask is not None and np.any(mask.array):
        if not mask.grid.same_as(cta.grid):
            raise ValueError("mask grid differs from the CTA grid: "
                             + "; ".join(mask.grid.differences(cta.grid)))
        idx = np.argwhere(np.asarray(mask.array) != 0)
        lo, hi = idx.min(0), idx.max(0)
        centre = (lo + hi) / 2.0
        extent_mm = (hi - lo + 1) * np.asarray(cta.spacing)
        size = np.maximum(size, extent_mm)
        return _box_around(centre, size + 2 * margin_mm, cta.grid)
    if mode == "mask":
        warnings.warn("ROI mode 'mask' but the case has no (or an empty) clot mask; using the "
                      "automatic Circle-of-Willis box", UserWarning, stacklevel=2)
    elif mode != "auto":
        raise ValueError(f"unknown ROI mode {mode!r} (auto, mask or none)")
    centre = find_circle_of_willis(cta)
    return _box_around(cta.grid.physical_to_index(centre)[0], size + 2 * margin_mm, cta.grid)


def _size_per_axis(grid: Grid, size_mm) -> np.ndarray:
    """Box length in mm per *array* axis from a cube length or (L-R, A-P, S-I) lengths."""
    s = np.atleast_1d(np.asarray(size_mm, dtype=float))
    if s.size == 1:
        return np.repeat(s, 3)
    if s.size != 3:
        raise ValueError(f"ROI size must be one or three lengths in mm, got {size_mm}")
    patient_axis = np.argmax(np.abs(grid.direction_matrix), axis=0)  # per array axis
    return s[patient_axis]


def _box_around(centre_index: np.ndarray, size_mm: np.ndarray, grid: Grid) -> Box:
    """Box of ``size_mm`` centred on a continuous index; shifted inward when it would cross
    the volume's edge (keeps its size where the volume allows), then clipped."""
    shape = np.asarray(grid.shape)
    n = np.minimum(np.maximum(1, np.round(size_mm / np.asarray(grid.spacing))).astype(int),
                   shape)
    start = np.round(np.asarray(centre_index) - (n - 1) / 2.0).astype(int)
    start = np.clip(start, 0, shape - n)
    return Box(tuple(start), tuple(start + n))


def find_circle_of_willis(cta: Volume) -> np.ndarray:
    """Estimated centre of the Circle of Willis, an LPS point in mm (see module docstring).

    Falls back to the centre of the head with a warning when no contrast-filled vessel is
    found (e.g. an NCCT given as CTA).
    """
    from clotseg.preprocess.resample import block_mean, resample_to_grid

    grid = _lps_work_grid(cta.grid)
    # Block-averaged first (to about half the working spacing): a clinical CTA is never
    # copied as a whole in float.
    fine = block_mean(cta, np.full(3, WORK_SPACING_MM / 2))
    coarse = resample_to_grid(fine.with_array(np.asarray(fine.array, dtype=np.float32)), grid,
                              default_value=-1000.0)
    hu = np.asarray(coarse.array, dtype=np.float32)
    head = _largest_component(hu > HEAD_HU)
    if not head.any():
        head = np.ones_like(head)
    head_centre = _centroid(grid, head)
    bone = hu > BONE_HU
    if bone.any():
        guard = max(1, int(round(BONE_GUARD_MM / WORK_SPACING_MM)))
        bone = ndimage.binary_dilation(bone, ndimage.generate_binary_structure(3, 2), guard)
    lumen = (hu >= LUMEN_HU[0]) & (hu <= LUMEN_HU[1]) & ~bone & head
    if lumen.sum() < 5:
        warnings.warn("automatic ROI: no contrast-filled vessels (100-600 HU) found; centring "
                      "the box on the head", UserWarning, stacklevel=3)
        return head_centre
    density = ndimage.gaussian_filter(_centrelines(lumen), DENSITY_SIGMA_MM / WORK_SPACING_MM)
    # Left-right: the head's midline (an occluded side has fainter arteries, which would
    # pull a density peak to the healthy side). Front-back and up-down: densest lumen in a
    # slab around the midline, weighted by the head-centred prior.
    mid = grid.physical_to_index(head_centre)[0]
    mid[0] = _midline(hu, mid[0])
    half = int(round(MIDLINE_SLAB_MM / WORK_SPACING_MM))
    i0 = int(np.clip(round(mid[0]), 0, grid.shape[0] - 1))
    slab = density[max(0, i0 - half): i0 + half + 1].sum(axis=0)
    slab *= _prior_2d(grid, mid)
    j, k = np.unravel_index(int(np.argmax(slab)), slab.shape)
    return grid.index_to_physical(np.array([mid[0], j, k], dtype=float))[0]


def _centrelines(lumen: np.ndarray) -> np.ndarray:
    """Skeleton of the lumen mask weighted by how horizontal the vessel runs (float32).

    The skeleton counts vessel *length* rather than volume, so the 5 mm carotid siphons do
    not outweigh the thinner arteries of the circle; the weight (sine of the angle between
    the vessel and the up-down axis, from the structure tensor of the lumen) favours the
    circle's horizontal segments (M1, A1, P1, communicating arteries) over the vertical
    carotids, basilar artery and sinuses below and above it.
    """
    from skimage.morphology import skeletonize

    skel = skeletonize(lumen)
    pts = np.argwhere(skel)
    if len(pts) == 0:
        return skel.astype(np.float32)
    smooth = ndimage.gaussian_filter(lumen.astype(np.float32), 1.0)
    grads = np.gradient(smooth)
    tensor = np.empty((len(pts), 3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            t = ndimage.gaussian_filter(grads[a] * grads[b], 2.0)[tuple(pts.T)]
            tensor[:, a, b] = tensor[:, b, a] = t
    _, vecs = np.linalg.eigh(tensor)
    along = vecs[:, :, 0]  # smallest eigenvalue: the direction along the tube
    out = np.zeros(lumen.shape, np.float32)
    out[tuple(pts.T)] = np.sqrt(np.clip(1.0 - along[:, 2] ** 2, 0.0, 1.0))
    return out


def _midline(hu: np.ndarray, guess: float) -> float:
    """Left-right index of the head's mirror plane: the reflection ``x -> 2 m - x`` that best
    matches the image with itself (Pearson correlation of HU clipped to [-100, 1000], so
    bone, air and contrast lumen carry it), searched within ±MIDLINE_SEARCH_MM of
    ``guess``. Needed when the volume is already a crop that does not show the whole head
    (its centre is then not the midline); on a whole head it refines the head's centre."""
    f = np.clip(hu[:, ::2, ::2], -100.0, 1000.0)
    n = f.shape[0]
    reach = MIDLINE_SEARCH_MM / WORK_SPACING_MM
    min_width = int(MIDLINE_MIN_WIDTH_MM / WORK_SPACING_MM)
    best, best_s = -np.inf, 2 * guess
    for s in range(int(np.floor(2 * (guess - reach))), int(np.ceil(2 * (guess + reach))) + 1):
        lo, hi = max(0, s - (n - 1)), min(n - 1, s)
        if hi - lo + 1 < min_width:
            continue
        a = f[lo:hi + 1].ravel()
        b = f[s - lo - (hi - lo): s - lo + 1][::-1].ravel()
        a, b = a - a.mean(), b - b.mean()
        denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
        score = float((a * b).sum()) / denom if denom > 0 else -np.inf
        if score > best:
            best, best_s = score, s
    return best_s / 2.0


def _lps_work_grid(grid: Grid) -> Grid:
    """A coarse grid with identity direction (axes = L, P, S) covering ``grid``'s box."""
    lo, hi = grid.bounds()
    shape = tuple(int(np.ceil((h - lo_) / WORK_SPACING_MM)) + 1 for lo_, h in zip(lo, hi))
    return Grid(shape, (WORK_SPACING_MM,) * 3, tuple(float(v) for v in lo),
                (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def _centroid(grid: Grid, mask: np.ndarray) -> np.ndarray:
    return grid.index_to_physical(np.argwhere(mask).mean(0))[0]


def _prior_2d(grid: Grid, centre_index: np.ndarray) -> np.ndarray:
    """Gaussian weight (σ = PRIOR_SIGMA_MM) around the head centre in the (P, S) plane."""
    dj = (np.arange(grid.shape[1]) - centre_index[1]) * grid.spacing[1]
    dk = (np.arange(grid.shape[2]) - centre_index[2]) * grid.spacing[2]
    d2 = dj[:, None] ** 2 + dk[None, :] ** 2
    return np.exp(-d2 / (2 * PRIOR_SIGMA_MM**2)).astype(np.float32)
