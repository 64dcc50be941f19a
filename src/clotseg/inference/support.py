"""Is a found clot seen on each scan by itself? ("scan support")

A network trained with modality dropout (``train.modality_dropout``) also predicts from the
CTA alone or the NCCT alone. Run that way over a component the both-scan map found, it
says whether the CTA's filling defect and the NCCT's hyperdense vessel each support it.
A true clot usually shows on both; a false positive is often made by one scan only: bone
averaged into a thick NCCT slice looks hyperdense but leaves the CTA's lumen intact.

It is a QC signal (:mod:`clotseg.inference.qc`, ``unsupported``), asked for with
``predict --scan-support``. Measured on the phantom (three 30-minute runs, 90 patients per
cohort; the README's quality section): it ranks the masks by Dice better on the training
site in every run and on the unseen site in two of three, but not the patients as a whole
on the unseen site (where the empty results, half of them missed clots, bound the
ranking), and on the demo's short-trained model, whose one-scan paths are weak, it raised
good masks' scores as much as poor ones'. Hence off by default. Ranking components by it
for the primary-clot choice moved the clots found within the run-to-run spread, and
dropping weakly supported clots cost more clots than specks: neither is done.

The two extra network passes run only on the slices where the both-scan map reaches a
floor (:func:`clotseg.inference.engine.predict_alone`), and the maps are kept only in the
box around them (:class:`LocalMap`), so neither time nor memory grows with the scan.
In a fold ensemble each member asks only about what it found itself, and the supports
are averaged like the probabilities: a component that one member alone found gets the
others' support as 0, a conservative bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clotseg.masks import bounding_box
from clotseg.preprocess.roi import Box

#: The scans a support map can come from: the map is the probability from that scan alone.
SCANS = ("cta", "ncct")

__all__ = ["SCANS", "LocalMap", "Support", "local_map"]


@dataclass
class LocalMap:
    """A map that is zero outside ``box`` (on some grid), stored only inside it."""

    box: Box
    array: np.ndarray  # shape == box.size

    def take(self, region: tuple[slice, ...]) -> np.ndarray:
        """The map's values over ``region`` of the full grid (zero outside the box), as a
        float32 array of the region's shape.

        Examples:
            >>> m = LocalMap(Box((1, 1, 1), (3, 3, 3)), np.ones((2, 2, 2), np.float32))
            >>> m.take((slice(0, 2), slice(0, 2), slice(0, 2))).sum()
            np.float32(1.0)
        """
        out = np.zeros([s.stop - s.start for s in region], dtype=np.float32)
        src, dst = [], []
        for s, a, b in zip(region, self.box.start, self.box.stop):
            lo, hi = max(s.start, a), min(s.stop, b)
            if hi <= lo:
                return out
            src.append(slice(lo - a, hi - a))
            dst.append(slice(lo - s.start, hi - s.start))
        out[tuple(dst)] = self.array[tuple(src)]
        return out

    def plus(self, other: LocalMap) -> LocalMap:
        """The sum of two local maps on the same grid, over the union of their boxes."""
        start = tuple(min(a, b) for a, b in zip(self.box.start, other.box.start))
        stop = tuple(max(a, b) for a, b in zip(self.box.stop, other.box.stop))
        union = tuple(slice(a, b) for a, b in zip(start, stop))
        return LocalMap(Box(start, stop), self.take(union) + other.take(union))

    def scaled(self, factor: float) -> LocalMap:
        return LocalMap(self.box, self.array * np.float32(factor))


def local_map(full: np.ndarray) -> LocalMap | None:
    """The non-zero part of a full-size map (None when it is zero everywhere)."""
    box = bounding_box(full)
    if box is None:
        return None
    return LocalMap(Box(tuple(s.start for s in box), tuple(s.stop for s in box)),
                    np.array(full[box], dtype=np.float32))


@dataclass
class Support:
    """Probability from each scan alone (:data:`SCANS`), on the CTA grid, near the found
    components (zero elsewhere: nothing was found there)."""

    maps: dict[str, LocalMap | None]

    def take(self, region: tuple[slice, ...]) -> dict[str, np.ndarray]:
        """Each scan's map over ``region`` of the CTA grid."""
        shape = [s.stop - s.start for s in region]
        return {k: (np.zeros(shape, np.float32) if m is None else m.take(region))
                for k, m in self.maps.items()}

    def of(self, clot: np.ndarray, region: tuple[slice, ...] | None = None
           ) -> dict[str, float]:
        """Mean probability from each scan alone over the voxels of ``clot`` (a mask over
        ``region`` of the CTA grid, or over the whole grid); NaN for an empty mask."""
        clot = np.asarray(clot) > 0
        if region is None:
            region = tuple(slice(0, n) for n in clot.shape)
        if not clot.any():
            return {k: float("nan") for k in self.maps}
        return {k: float(v[clot].mean()) for k, v in self.take(region).items()}
