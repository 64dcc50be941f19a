"""Reorienting arrays to a canonical, axial-last view and back.

The network sees axial slices. Which array axis is axial, and which way each axis runs,
depends on how the scanner or the converter stored the volume, so we derive it from the
direction matrix: the array is permuted and flipped (no interpolation, so exactly
invertible) such that its axes run as close as possible to patient L, P and S, in that
order. Axial slices are then ``canonical[:, :, k]``. Oblique directions are handled by
assigning each array axis to the patient axis it is closest to.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from clotseg.io.volume import Grid


@dataclass(frozen=True)
class Orientation:
    """How an array was permuted and flipped into canonical (L, P, S) order."""

    perm: tuple[int, int, int]  # canonical axis c comes from array axis perm[c]
    flip: tuple[bool, bool, bool]  # flip applied to canonical axis c

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """View of ``array`` (3D, or with extra leading dims) in canonical order."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.perm))
        for c, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=lead + c)
        return out

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`: back to the stored array order."""
        lead = array.ndim - 3
        out = array
        for c, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=lead + c)
        inv = np.argsort(self.perm)
        return np.transpose(out, tuple(range(lead)) + tuple(lead + int(p) for p in inv))

    def canonical_spacing(self, spacing: tuple[float, float, float]) -> tuple[float, ...]:
        """Spacing in canonical axis order."""
        return tuple(float(spacing[p]) for p in self.perm)


def orientation_of(grid: Grid) -> Orientation:
    """Permutation/flip that brings ``grid``'s array closest to L, P, S axis order."""
    d = grid.direction_matrix  # columns: array axes in LPS
    best, best_score = (0, 1, 2), -1.0
    for perm in permutations(range(3)):
        # canonical axis c (patient axis c) <- array axis perm[c]
        score = sum(abs(d[c, perm[c]]) for c in range(3))
        if score > best_score + 1e-9:
            best, best_score = perm, score
    flip = tuple(bool(d[c, best[c]] < 0) for c in range(3))
    return Orientation(tuple(int(p) for p in best), flip)  # type: ignore[arg-type]
