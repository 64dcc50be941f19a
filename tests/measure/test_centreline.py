"""Centreline length of digitised tubes of known arc length, anisotropic spacing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from clotseg.measure.centreline import centreline_length_mm

ANISO = np.array([0.45, 0.6, 1.5])


def tube(curve: np.ndarray, radius: float, spacing: np.ndarray) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` of a densely sampled curve (mm), with
    flat ends: points nearest to an end sample lie beyond the end face."""
    lo = curve.min(axis=0) - radius - 2.0
    shape = np.ceil((curve.max(axis=0) + radius + 2.0 - lo) / spacing).astype(int) + 1
    centres = np.indices(shape).reshape(3, -1).T * spacing + lo
    dist, nearest = cKDTree(curve).query(centres)
    inside = (dist <= radius) & (nearest > 0) & (nearest < len(curve) - 1)
    return inside.reshape(shape)


def arc_length(curve: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(curve, axis=0), axis=1).sum())


S = np.linspace(0.0, 1.0, 4000)[:, None]
CURVES = {
    "straight oblique": np.array([14.0, 9.0, 10.0]) * S,
    "quarter circle through slices": np.hstack([15 * np.cos(S * np.pi / 2), 0 * S,
                                                15 * np.sin(S * np.pi / 2)]),
    "quarter circle in plane": np.hstack([15 * np.cos(S * np.pi / 2),
                                          15 * np.sin(S * np.pi / 2), 0 * S]),
    "helix": np.hstack([6 * np.cos(S * 2 * np.pi), 6 * np.sin(S * 2 * np.pi), 12 * S]),
}


@pytest.mark.parametrize("name", list(CURVES))
def test_tube_length_within_5_percent(name):
    curve = CURVES[name]
    mask = tube(curve, 1.5, ANISO)
    assert centreline_length_mm(mask, ANISO) == pytest.approx(arc_length(curve), rel=0.05)


def test_spacing_is_used():
    # The same voxels with the slice spacing doubled: the z-aligned tube doubles in length.
    mask = tube(np.hstack([0 * S, 0 * S, 20 * S]), 1.5, np.array([0.5, 0.5, 1.0]))
    short = centreline_length_mm(mask, (0.5, 0.5, 1.0))
    assert short == pytest.approx(20.0, rel=0.05)
    assert centreline_length_mm(mask, (0.5, 0.5, 2.0)) == pytest.approx(2 * short, rel=0.05)


@pytest.mark.parametrize("width", [4, 6])
def test_even_width_prism_is_measured(width):
    # scikit-image's 3D thinning deletes such prisms entirely (its issue #3757).
    mask = np.zeros((width + 6, width + 6, 40), bool)
    mask[3:3 + width, 3:3 + width, 5:35] = True
    assert centreline_length_mm(mask, (0.5, 0.5, 0.5)) == pytest.approx(15.0, rel=0.05)


def test_short_fat_clot_is_not_zero():
    # A 5 mm ball has no meaningful skeleton path; its length is its diameter.
    grid = np.indices((15, 15, 9)).transpose(1, 2, 3, 0) * np.array([0.5, 0.5, 1.0])
    ball = np.linalg.norm(grid - [3.5, 3.5, 4.0], axis=-1) <= 2.5
    assert centreline_length_mm(ball, (0.5, 0.5, 1.0)) == pytest.approx(5.0, rel=0.15)


def test_empty_single_voxel_and_fragments():
    assert centreline_length_mm(np.zeros((5, 5, 5), bool), (1, 1, 1)) == 0.0
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    assert 0.5 <= centreline_length_mm(one, (1.0, 1.0, 1.0)) <= 1.8
    # Two separate fragments: lengths add up.
    mask = np.zeros((10, 10, 60), bool)
    mask[2:6, 2:6, 5:25] = True
    mask[2:6, 2:6, 35:55] = True
    both = centreline_length_mm(mask, (0.5, 0.5, 0.5))
    assert both == pytest.approx(20.0, rel=0.05)
