"""Resampling: grids, dtypes, label interpolation, and exact round trips of geometry."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.resample import (
    grid_from_dict,
    grid_to_dict,
    grid_with_spacing,
    resample_to_grid,
    resample_to_spacing,
)
from tests.helpers import DIRECTIONS, make_volume


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def ball_mask(grid: Grid, centre, radius: float) -> Volume:
    pts = grid.index_to_physical(np.indices(grid.shape).reshape(3, -1).T)
    inside = np.linalg.norm(pts - np.asarray(centre), axis=1) <= radius
    return Volume.on_grid(inside.reshape(grid.shape).astype(np.uint8), grid)


@pytest.mark.parametrize("dname", sorted(DIRECTIONS))
def test_grid_with_spacing_keeps_origin_direction_and_extent(dname):
    vol = make_volume(DIRECTIONS[dname], shape=(40, 30, 12), spacing=(0.45, 0.6, 2.0))
    g = grid_with_spacing(vol.grid, (0.9, 0.9, 1.0))
    assert g.origin == vol.grid.origin and g.direction == vol.grid.direction
    assert g.shape == (20, 20, 24)
    np.testing.assert_allclose(np.asarray(g.shape) * g.spacing,
                               np.asarray(vol.shape) * vol.spacing, atol=0.5)


def test_identity_resample_is_exact_for_every_interpolation():
    vol = make_volume(DIRECTIONS["oblique"], dtype=np.int16)
    for interp in ("linear", "bspline", "nearest"):
        out = resample_to_grid(vol, vol.grid, interpolation=interp)
        assert out.array.dtype == np.int16
        np.testing.assert_array_equal(out.array, vol.array)
        assert out.grid.same_as(vol.grid)


def test_integer_images_are_rounded_not_truncated():
    vol = Volume(np.array([0, 1], np.int16).reshape(2, 1, 1).repeat(2, 1).repeat(2, 2),
                 (1.0, 1.0, 1.0))
    g = Grid((3, 2, 2), (0.5, 1.0, 1.0), vol.origin, vol.direction)
    out = resample_to_grid(vol, g, interpolation="linear")
    # 0.5 rounds half to even (0); 2/3 must round up to 1, not truncate to 0.
    np.testing.assert_array_equal(out.array[:, 0, 0], [0, 0, 1])
    g2 = Grid((4, 2, 2), (1 / 3, 1.0, 1.0), vol.origin, vol.direction)
    np.testing.assert_array_equal(resample_to_grid(vol, g2).array[:, 0, 0], [0, 0, 1, 1])


def test_label_interpolation_is_binary_and_follows_the_object():
    grid = Grid((40, 40, 20), (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    mask = ball_mask(grid, (10.0, 10.0, 10.0), 5.0)
    coarse = grid_with_spacing(grid, (1.3, 1.1, 1.7))
    out = resample_to_grid(mask, coarse, interpolation="label")
    assert out.array.dtype == np.uint8 and set(np.unique(out.array)) <= {0, 1}
    assert dice(out.array, ball_mask(coarse, (10.0, 10.0, 10.0), 5.0).array) > 0.9
    vol_mm3 = out.array.sum() * out.voxel_volume
    assert abs(vol_mm3 - 4 / 3 * np.pi * 125) / (4 / 3 * np.pi * 125) < 0.1


def test_multilabel_masks_keep_their_labels():
    grid = Grid((30, 30, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    arr = np.zeros(grid.shape, np.uint8)
    arr[5:12, 5:12, 2:8] = 1
    arr[16:25, 16:25, 2:8] = 2
    out = resample_to_grid(Volume.on_grid(arr, grid), grid_with_spacing(grid, (0.7, 0.7, 0.7)),
                           interpolation="label")
    assert set(np.unique(out.array)) == {0, 1, 2}


@pytest.mark.parametrize("dname", sorted(DIRECTIONS))
def test_resample_then_back_restores_grid_exactly_and_keeps_the_mask(dname):
    grid = Grid((48, 40, 16), (0.45, 0.55, 1.8), (-12.5, 30.25, 7.0),
                tuple(np.asarray(DIRECTIONS[dname]).ravel()))
    centre = grid.index_to_physical(np.array([24.0, 20.0, 8.0]))[0]
    mask = ball_mask(grid, centre, 4.0)
    down = resample_to_spacing(mask, (0.8, 0.8, 0.8), interpolation="label")
    back = resample_to_grid(down, grid, interpolation="label")
    assert back.grid.same_as(grid, atol_mm=1e-9)
    assert back.shape == grid.shape and back.spacing == grid.spacing
    assert back.origin == grid.origin and back.direction == grid.direction
    assert dice(back.array, mask.array) > 0.9


def test_transform_moves_the_sampling_points():
    import SimpleITK as sitk

    grid = Grid((30, 30, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    mask = ball_mask(grid, (15.0, 15.0, 15.0), 5.0)
    tx = sitk.TranslationTransform(3, (3.0, 0.0, 0.0))  # fixed point p samples p + 3 mm
    out = resample_to_grid(mask, grid, transform=tx, interpolation="label")
    assert dice(out.array, ball_mask(grid, (12.0, 15.0, 15.0), 5.0).array) > 0.99


def test_grid_dict_round_trip():
    g = make_volume(DIRECTIONS["oblique"]).grid
    assert grid_from_dict(grid_to_dict(g)) == g


def test_unknown_interpolation_is_refused():
    vol = make_volume(np.eye(3))
    with pytest.raises(ValueError, match="unknown interpolation"):
        resample_to_grid(vol, vol.grid, interpolation="cubic")


def test_block_mean_keeps_geometry_and_averages_blocks():
    """Each block's mean sits at the block's centre: a linear ramp in patient space keeps
    its value at every new voxel's physical position, in any orientation."""
    from clotseg.preprocess.resample import block_mean

    d = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    grid = Grid((9, 8, 5), (0.4, 0.45, 1.2), (3.0, -7.0, 11.0), tuple(d.ravel()))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    pts = grid.index_to_physical(idx.reshape(-1, 3))
    ramp = (pts @ np.array([0.3, -1.1, 0.7])).reshape(grid.shape)
    out = block_mean(Volume.on_grid(ramp.astype(np.float32), grid), (1.0, 1.0, 1.0))
    assert out.shape == (4, 4, 5) and out.spacing == (0.8, 0.9, 1.2)
    assert out.array.dtype == np.float32
    new = out.grid.index_to_physical(
        np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), -1
                 ).reshape(-1, 3))
    np.testing.assert_allclose(out.array.ravel(), new @ np.array([0.3, -1.1, 0.7]), atol=1e-4)
    same = Volume.on_grid(ramp.astype(np.float32), grid)
    assert block_mean(same, (0.5, 0.5, 0.5)) is same  # nothing to average


@pytest.mark.parametrize("interpolation", ["linear", "nearest", "label"])
def test_a_resample_past_the_size_limit_is_refused_before_allocating(monkeypatch,
                                                                     interpolation):
    from clotseg.errors import ClotsegError

    monkeypatch.setenv("CLOTSEG_MAX_VOLUME_GB", str(4 * 64**3 / (1 << 30)))  # 64³ float32
    vol = Volume(np.zeros((8, 8, 8), np.uint8), (10.0, 10.0, 10.0))
    fits = Grid((64, 64, 64), (1.25, 1.25, 1.25), (0.0, 0.0, 0.0), vol.direction)
    assert resample_to_grid(vol, fits, interpolation=interpolation).shape == (64, 64, 64)
    with pytest.raises(ClotsegError, match=r"65 x 64 x 64 voxels .* above the .* limit"):
        resample_to_grid(vol, Grid((65, 64, 64), (1.25, 1.25, 1.25), (0.0, 0.0, 0.0),
                                   vol.direction), interpolation=interpolation)
