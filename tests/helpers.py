"""Small geometry helpers for tests: directions and volumes with non-trivial geometry."""

from __future__ import annotations

import numpy as np

from clotseg.io.volume import Volume


def rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


#: Directions used to exercise geometry handling: identity (LPS), RAS-like flip,
#: a permuted (sagittal-stored) volume, and an oblique one.
DIRECTIONS = {
    "identity": np.eye(3),
    "ras_flip": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "oblique": rotation("z", 20) @ rotation("x", -12),
}


def make_volume(direction: np.ndarray, shape=(11, 9, 7), spacing=(0.45, 0.6, 2.0),
                origin=(-12.5, 30.25, 7.0), dtype=np.float32, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    arr = (rng.normal(40, 30, size=shape)).astype(dtype)
    return Volume(arr, spacing, origin, np.asarray(direction).ravel())
