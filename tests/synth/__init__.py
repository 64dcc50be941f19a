"""Tests of the synthetic cohort. ``restored`` re-stores a grid or volume with permuted
and flipped axes while keeping every voxel centre where it was in patient space."""

from __future__ import annotations

import numpy as np

from clotseg.io.volume import Grid, Volume


def restored_grid(grid: Grid, perm: tuple[int, int, int], flip: tuple[bool, bool, bool]) -> Grid:
    """The same voxel centres, stored with axes ``perm`` and the flagged axes reversed."""
    d, sp, n = grid.direction_matrix, np.asarray(grid.spacing), np.asarray(grid.shape)
    origin = np.asarray(grid.origin, float).copy()
    cols = []
    for a, p in enumerate(perm):
        sign = -1.0 if flip[a] else 1.0
        cols.append(d[:, p] * sign)
        if flip[a]:
            origin += d[:, p] * sp[p] * (n[p] - 1)
    return Grid(tuple(int(n[p]) for p in perm), tuple(float(sp[p]) for p in perm),
                tuple(origin), tuple(np.stack(cols, axis=1).ravel()))


def restored(vol: Volume, perm: tuple[int, int, int], flip: tuple[bool, bool, bool]) -> Volume:
    arr = np.transpose(vol.array, perm)
    for a, f in enumerate(flip):
        if f:
            arr = np.flip(arr, axis=a)
    return Volume.on_grid(np.ascontiguousarray(arr), restored_grid(vol.grid, perm, flip))
