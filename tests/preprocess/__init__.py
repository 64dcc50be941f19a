"""A small synthetic head shared by the preprocessing tests.

Defined in physical space (LPS, mm) and sampled on any grid, so tests can move the NCCT by a
known rigid transform and use oblique or flipped grids: an ellipsoid head with a skull
shell (~1000 HU), skull base and a few bony bumps, brain (~35 HU), a Circle-of-Willis-like ring of arteries
with carotids and middle cerebral arteries (contrast ~400 HU on CTA, blood ~40 HU on
NCCT), a contrast-filled venous sinus against the back of the skull (a distractor), and a
clot in the left middle cerebral artery.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clotseg.io.volume import Grid, Volume

HEAD_SEMI_AXES = np.array([62.0, 75.0, 60.0])  # L-R, A-P, S-I (mm)
SKULL_MM = 5.0
COW_CENTRE = np.array([0.0, -8.0, -18.0])  # below and in front of the head centre
#: Bony bumps (centre, radius in mm) like petrous ridges, clinoid and nasal bone: without
#: them an ellipsoid could turn about itself without any surface moving.
BONY_LANDMARKS = [((-28.0, 12.0, -34.0), 6.0), ((30.0, 16.0, -35.0), 5.0),
                  ((8.0, -2.0, -34.0), 3.5), ((0.0, -60.0, -28.0), 7.0),
                  ((-20.0, 45.0, -36.0), 4.0)]


def rotation(angles_deg) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx from angles about x, y, z in degrees."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _vessels() -> list[tuple[np.ndarray, np.ndarray, float, str]]:
    """(start, end, radius, kind) of straight tube pieces; kind: artery, clot, sinus."""
    c = COW_CENTRE
    tubes = []
    ring = [c + 12 * np.array([np.cos(t), 0.8 * np.sin(t), 0.0])
            for t in np.linspace(0, 2 * np.pi, 13)]
    tubes += [(ring[i], ring[i + 1], 1.4, "artery") for i in range(12)]
    for s in (-1, 1):
        ica_top = c + np.array([s * 12, 0, 0])
        tubes.append((ica_top + [0, 4, -28], ica_top, 2.4, "artery"))
        m1_end = c + np.array([s * 36, 2, 4])
        if s > 0:  # left M1: proximal lumen, clot, then faint distal lumen
            a, b = ica_top + (m1_end - ica_top) * 0.35, ica_top + (m1_end - ica_top) * 0.75
            tubes += [(ica_top, a, 1.6, "artery"), (a, b, 1.6, "clot"),
                      (b, m1_end, 1.6, "artery")]
        else:
            tubes.append((ica_top, m1_end, 1.6, "artery"))
        tubes.append((m1_end, m1_end + [s * 8, -6, 14], 1.2, "artery"))
    # Superior sagittal / straight sinus: contrast-filled, against the back of the skull.
    back = np.array([0.0, HEAD_SEMI_AXES[1] - SKULL_MM - 4, 0.0])
    tubes.append((back + [0, 0, -20], back + [0, -25, 45], 3.0, "sinus"))
    return tubes


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def render(points: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CTA HU, NCCT HU and clot fraction at (N, 3) LPS points (before noise and blur)."""
    q = points / HEAD_SEMI_AXES
    r = np.linalg.norm(q, axis=1)  # 1 on the head surface
    depth = (1.0 - r) * HEAD_SEMI_AXES.min()  # approximate mm below the surface
    inside = np.clip(depth / voxel_mm + 0.5, 0, 1)
    skull = np.clip(depth / voxel_mm + 0.5, 0, 1) * np.clip((SKULL_MM - depth) / voxel_mm + 0.5,
                                                            0, 1)
    base = np.clip((-38.0 - points[:, 2]) / voxel_mm + 0.5, 0, 1) * inside  # skull base
    bone = np.maximum(skull, base)
    for centre, radius in BONY_LANDMARKS:  # break the ellipsoid's symmetries
        d = np.linalg.norm(points - np.asarray(centre), axis=1)
        bone = np.maximum(bone, np.clip((radius - d) / voxel_mm + 0.5, 0, 1))
    ncct = -1000.0 * (1 - inside) + 35.0 * inside
    ncct = ncct * (1 - bone) + 1000.0 * bone
    cta = ncct.copy()
    clot = np.zeros(len(points))
    for a, b, radius, kind in _vessels():
        reach = radius + voxel_mm
        near = np.flatnonzero(np.all((points >= np.minimum(a, b) - reach)
                                     & (points <= np.maximum(a, b) + reach), axis=1))
        d = _segment_distance(points[near], a, b)
        occ = np.clip((radius - d) / voxel_mm + 0.5, 0, 1) * (1 - bone[near])
        lumen_cta, lumen_ncct = {"artery": (400.0, 40.0), "clot": (62.0, 52.0),
                                 "sinus": (300.0, 40.0)}[kind]
        cta[near] = cta[near] * (1 - occ) + lumen_cta * occ
        ncct[near] = ncct[near] * (1 - occ) + lumen_ncct * occ
        if kind == "clot":
            clot[near] = np.maximum(clot[near], occ)
    return cta, ncct, clot


def make_grid(shape=(90, 108, 52), spacing=(1.5, 1.5, 2.5), direction=None,
              centre=(0.0, 0.0, -5.0)) -> Grid:
    """A grid of ``shape``/``spacing`` centred on ``centre`` (LPS mm)."""
    d = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    shape, spacing = np.asarray(shape), np.asarray(spacing, float)
    origin = np.asarray(centre, float) - d @ (spacing * (shape - 1) / 2.0)
    return Grid(tuple(int(s) for s in shape), tuple(spacing), tuple(origin), tuple(d.ravel()))


def make_head(grid: Grid | None = None, *, motion: tuple | None = None, noise: float = 6.0,
              seed: int = 0) -> tuple[Volume, Volume, Volume]:
    """(CTA, NCCT, clot mask) on ``grid``.

    ``motion = (rotation_deg, translation_mm)`` moves the NCCT's anatomy by
    x -> R (x - c) + c + t with c = the Circle-of-Willis centre; see :func:`true_map`.
    """
    grid = grid or make_grid()
    rng = np.random.default_rng(seed)
    idx = np.indices(grid.shape).reshape(3, -1).T
    pts = grid.index_to_physical(idx)
    voxel = float(np.mean(grid.spacing))
    cta, ncct, clot = render(pts, voxel)
    if motion is not None:
        r, t = rotation(motion[0]), np.asarray(motion[1], float)
        src = (pts - COW_CENTRE - t) @ r + COW_CENTRE  # inverse map of each grid point
        _, ncct, _ = render(src, voxel)

    def finish(hu):
        out = ndimage.gaussian_filter(hu.reshape(grid.shape), 0.5)
        return np.round(out + rng.normal(0, noise, grid.shape)).astype(np.int16)

    mask = (clot.reshape(grid.shape) >= 0.5).astype(np.uint8)
    return (Volume.on_grid(finish(cta), grid), Volume.on_grid(finish(ncct), grid),
            Volume.on_grid(mask, grid))


def true_map(motion, points: np.ndarray) -> np.ndarray:
    """Where the NCCT shows the anatomy found at CTA ``points`` (N, 3) under ``motion``."""
    r, t = rotation(motion[0]), np.asarray(motion[1], float)
    return (points - COW_CENTRE) @ r.T + COW_CENTRE + t


def inner_box_points(grid: Grid, fraction: float = 0.25) -> np.ndarray:
    """The 8 corners of a box inside ``grid`` (``fraction`` in from each side), in LPS."""
    lo = (np.asarray(grid.shape) - 1) * fraction
    hi = (np.asarray(grid.shape) - 1) * (1 - fraction)
    corners = [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    return grid.index_to_physical(np.asarray(corners))
