"""Clot length as the arc length of its centreline.

Method of :func:`centreline_length_mm`, for each 26-connected object of the mask:

1. **Isotropic resampling.** The object's bounding box is resampled to cubic voxels of the
   smallest spacing (linear interpolation of the binary mask, threshold 0.5), so that
   thinning does not depend on anisotropic slices.
2. **Skeleton.** 3D thinning (scikit-image ``skeletonize``, Lee 1994) reduces the object to
   a one-voxel-wide curve.
3. **Longest path.** The skeleton voxels form a 26-neighbour graph whose edges weigh their
   length; the centreline is the graph's diameter (the longest shortest path), found with
   two Dijkstra sweeps (scipy.sparse.csgraph): the farthest node from any node is an end,
   the farthest node from that end is the other end.
4. **Staircase removal.** The voxel path is smoothed with a Gaussian along its length
   (σ = 2 voxels; the path is first extended by point reflection about its ends so that
   the ends stay put). Otherwise the zig-zag of voxel steps adds ~10 % on oblique or
   curved clots.
5. **End caps.** Thinning stops about one radius short of each clot end, often in a spur
   towards a corner of the end face. So the smoothed path loses ``r`` (the median
   distance-transform value along the path, i.e. the clot's radius; at most a quarter of
   the path) at each end, and each trimmed end is extended by a straight segment along
   the local direction (a line fit over the last ``r``) up to the mask surface, located
   at sub-voxel precision on the interpolated mask. A flat-ended tube of length ``L``
   therefore measures ≈ ``L``, not ``L − 2r``.
6. **Squat clots.** When the skeleton has no path longer than the radius (a blob), the
   length is the object's extent along its principal axis (PCA), face to face, so a
   short fat clot is never reported as ~0 mm: it gets its largest extent.

A mask with several objects gets the sum of their lengths (the fragments of one clot).

Accuracy on digitised straight, oblique, curved and helical tubes at several spacings
is checked in ``tests/measure/test_centreline.py``; short bent clots (under ~2.5
diameters) have an ambiguous length and are the least accurate. Written by hand
because none of the libraries used here measures a skeleton's geodesic length.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from clotseg.masks import components

#: Half of the 26 neighbour offsets of (1, 1, 1); the others are their mirror images.
_HALF_OFFSETS = [np.asarray(o) - 1 for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]


def centreline_length_mm(mask: np.ndarray, spacing) -> float:
    """Centreline arc length in mm of a binary 3D mask (sum over its 26-connected
    objects; 0.0 for an empty mask). ``spacing`` is in mm, in the array's axis order.
    See the module docstring for the method."""
    mask = np.asarray(mask) > 0
    spacing = np.asarray(spacing, dtype=float)
    labels, _ = components(mask)
    return float(sum(_object_length(labels[box] == k, spacing)
                     for k, box in enumerate(ndimage.find_objects(labels), start=1)))


def _object_length(obj: np.ndarray, spacing: np.ndarray) -> float:
    """Length (mm) of one connected object."""
    soft, iso = isotropic(obj, spacing)
    mask = soft >= 0.5
    if not mask.any():  # thinner than half a voxel after resampling
        return float(spacing.max())
    path = skeleton_path(mask)
    length = None
    if path is not None:
        depth = ndimage.distance_transform_edt(mask)
        length = _path_with_caps(path, soft, float(np.median(depth[tuple(path.T)])))
    if length is None:
        length = _principal_extent(mask)
    return float(length) * iso


def isotropic(obj: np.ndarray, spacing: np.ndarray, pad: int = 2) -> tuple[np.ndarray, float]:
    """Resample a binary object to cubic voxels of the smallest spacing.

    Returns the *interpolated* mask (float; the object is where it is ≥ 0.5), padded by
    ``pad`` empty voxels, and the new voxel size. Linear interpolation gives smoother
    surfaces than nearest neighbour, hence a skeleton without staircase artefacts.
    """
    iso = float(spacing.min())
    zoom = spacing / iso
    soft = np.pad(obj.astype(np.float32), 1)
    if not np.allclose(zoom, 1.0):
        soft = ndimage.zoom(soft, zoom, order=1, grid_mode=True, mode="grid-constant")
    return np.pad(soft, pad - 1), iso


def skeleton_path(mask: np.ndarray) -> np.ndarray | None:
    """Voxel coordinates along the longest path through the 3D skeleton of ``mask``
    (None when the skeleton is a single voxel).

    scikit-image's 3D thinning deletes some straight prisms entirely (scikit-image issue
    #3757, e.g. a 4 × 4 or 6 × 6 voxel cross-section); when that happens the mask is
    thickened by one voxel along one axis and thinned again, which moves the skeleton by
    half a voxel at most.
    """
    from skimage.morphology import skeletonize

    for axis in (None, 0, 1, 2):
        grown = mask if axis is None else mask | np.roll(mask, 1, axis=axis)
        points = np.argwhere(skeletonize(grown))
        if len(points):
            return longest_path(points) if len(points) >= 2 else None
    return None


def longest_path(points: np.ndarray) -> np.ndarray | None:
    """Points (N, 3 voxel indices) along the longest shortest path of their 26-neighbour
    graph (its diameter, by two Dijkstra sweeps); None if that path is a single point."""
    n = len(points)
    local = points - points.min(axis=0) + 1
    lut = np.full(local.max(axis=0) + 2, -1, dtype=np.int64)
    lut[tuple(local.T)] = np.arange(n)
    rows, cols, weights = [], [], []
    for step in _HALF_OFFSETS:
        nb = lut[tuple((local + step).T)]
        ok = nb >= 0
        rows.append(np.nonzero(ok)[0])
        cols.append(nb[ok])
        weights.append(np.full(int(ok.sum()), np.linalg.norm(step)))
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(n, n)).tocsr()
    # Start in the largest piece: the skeleton of one object can (rarely) break up.
    _, piece = connected_components(graph, directed=False)
    start = int(np.argmax(piece == np.bincount(piece).argmax()))
    d0 = dijkstra(graph, directed=False, indices=start)
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    da, pred = dijkstra(graph, directed=False, indices=a, return_predecessors=True)
    b = int(np.argmax(np.where(np.isfinite(da), da, -1)))
    if a == b:
        return None
    order = [b]
    while order[-1] != a:
        order.append(int(pred[order[-1]]))
    return points[order[::-1]]


def smooth_path(path: np.ndarray, sigma_vox: float = 2.0) -> np.ndarray:
    """Gaussian smoothing along a voxel path (σ in voxels) to remove the staircase.

    The path is extended by point reflection about each end first, so that the ends stay
    in place and a straight path stays straight (plain edge modes pull the ends inwards).
    """
    path = path.astype(float)
    if len(path) < 3:
        return path
    step = float(np.median(np.linalg.norm(np.diff(path, axis=0), axis=1)))
    sigma = sigma_vox / step
    n = min(len(path) - 1, int(np.ceil(4 * sigma)))
    ext = np.vstack([2 * path[0] - path[n:0:-1], path, 2 * path[-1] - path[-2:-n - 2:-1]])
    return ndimage.gaussian_filter1d(ext, sigma=sigma, axis=0, mode="nearest")[n:n + len(path)]


def _path_with_caps(path: np.ndarray, soft: np.ndarray, r: float) -> float | None:
    """Smoothed path length with ``r`` trimmed at each end, plus the straight end caps up
    to the surface (voxel units); None when the path is shorter than ``r``."""
    smooth = smooth_path(path)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(smooth, axis=0), axis=1))])
    if arc[-1] < r:
        return None
    trim = min(r, 0.25 * arc[-1])
    keep = (arc >= trim) & (arc <= arc[-1] - trim)
    if keep.sum() < 2:
        return None
    inner, inner_arc = smooth[keep], arc[keep]
    window = max(r, 2.0)
    caps = 0.0
    for end, near in ((inner[0], inner_arc <= inner_arc[0] + window),
                      (inner[-1], inner_arc >= inner_arc[-1] - window)):
        caps += march_to_surface(soft, end, _end_direction(inner[near], end))
    return float(inner_arc[-1] - inner_arc[0]) + caps


def _end_direction(points: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Direction of the path near one end: the principal axis of its last points (a line
    fit, steadier than the last step), oriented towards the end."""
    centre = points.mean(axis=0)
    if len(points) < 2:
        return end - centre
    axis = np.linalg.svd(points - centre, full_matrices=False)[2][0]
    return axis if np.dot(axis, end - centre) >= 0 else -axis


def march_to_surface(soft: np.ndarray, start: np.ndarray, direction: np.ndarray,
                     step: float = 0.1) -> float:
    """Distance (voxels) from ``start`` along ``direction`` to where the interpolated mask
    ``soft`` drops below 0.5, refined linearly between the last two samples."""
    norm = float(np.linalg.norm(direction))
    if norm == 0:
        return 0.0
    t = np.arange(0.0, float(np.linalg.norm(soft.shape)), step)
    pts = start[None, :] + t[:, None] * (direction / norm)[None, :]
    vals = ndimage.map_coordinates(soft, pts.T, order=1, mode="constant", cval=0.0)
    outside = np.nonzero(vals < 0.5)[0]
    if len(outside) == 0:
        return float(t[-1])
    i = int(outside[0])
    if i == 0:
        return 0.0
    v0, v1 = vals[i - 1], vals[i]
    return float(t[i - 1] + step * (v0 - 0.5) / (v0 - v1))


def _principal_extent(mask: np.ndarray) -> float:
    """Extent of an object along its principal axis (PCA), face to face (voxels)."""
    pts = np.argwhere(mask).astype(float)
    if len(pts) < 2:
        return 1.0
    centred = pts - pts.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    proj = centred @ axis
    return float(proj.max() - proj.min() + 1.0)
