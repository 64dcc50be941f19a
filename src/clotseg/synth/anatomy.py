"""Anatomy of the phantom, in millimetres in a head-centred frame (x left, y posterior,
z superior, i.e. LPS axes with the origin at the centre of the Circle of Willis).

Vessels are polylines through control points, smoothed into curves and sampled densely;
each sample carries its segment, arc length and radius. Diameters (DOMAIN.md, Rai JNIS
5(4):371; Folia Morphol 2018; Turk Neurosurg; Rai JNIS 5(6):597): cavernous ICA 5.0 mm,
ICA terminus 3.6, M1 3.1 (length ≈ 22 mm), M2 2.4, A1 2.05, AComm 1.16, P1 1.8,
basilar 3.6 → 3.1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One vessel segment: control points (mm), diameters at both ends, parent segment."""

    name: str
    kind: str  # ICA, M1, M2, A1, ACOM, BA, P1, P2, ACA
    points: tuple[tuple[float, float, float], ...]
    diameter: tuple[float, float]  # proximal, distal (mm)
    parent: str | None


def _side(sign: float, name: str) -> list[Segment]:
    """Anterior-circulation segments of one side (sign -1 = right, +1 = left in LPS)."""
    s = sign
    side = "L" if sign > 0 else "R"
    return [
        # ICA from the cavernous segment through the siphon up to the terminus.
        Segment(f"ICA_{side}", "ICA", ((s * 15, 10, -30), (s * 16, 2, -22), (s * 14, -7, -14),
                                      (s * 15, -3, -6), (s * 13, 0, 0)), (5.0, 3.6), None),
        Segment(f"M1_{side}", "M1", ((s * 13, 0, 0), (s * 22, 1, 2), (s * 34, 2, 3)),
                (3.1, 2.8), f"ICA_{side}"),
        Segment(f"M2a_{side}", "M2", ((s * 34, 2, 3), (s * 39, -3, 9), (s * 42, -6, 16)),
                (2.4, 2.0), f"M1_{side}"),
        Segment(f"M2b_{side}", "M2", ((s * 34, 2, 3), (s * 40, 7, 6), (s * 43, 12, 12)),
                (2.4, 2.0), f"M1_{side}"),
        Segment(f"A1_{side}", "A1", ((s * 13, 0, 0), (s * 7, -7, 2), (s * 2, -12, 4)),
                (2.05, 2.0), f"ICA_{side}"),
        Segment(f"ACA_{side}", "ACA", ((s * 2, -12, 4), (s * 2.5, -16, 14), (s * 3, -14, 24)),
                (1.9, 1.7), f"A1_{side}"),
        Segment(f"P1_{side}", "P1", ((0, 14, -2), (s * 6, 13, -1.5), (s * 10, 12, -1)),
                (1.85, 1.8), "BA"),
        Segment(f"P2_{side}", "P2", ((s * 10, 12, -1), (s * 16, 17, 1), (s * 21, 22, 3)),
                (1.8, 1.6), f"P1_{side}"),
    ]


def vessel_tree() -> list[Segment]:
    """The Circle-of-Willis-like tree (both sides, AComm, basilar)."""
    segs = _side(-1.0, "R") + _side(1.0, "L")
    segs.append(Segment("ACOM", "ACOM", ((-2, -12, 4), (0, -12.5, 4), (2, -12, 4)),
                        (1.16, 1.16), "A1_R"))
    segs.append(Segment("BA", "BA", ((0, 22, -28), (0.5, 18, -15), (0, 14, -2)),
                        (3.6, 3.1), None))
    return segs


#: Clot location mix (DOMAIN.md: MR CLEAN Registry, JNIS 2023;15:e60, n = 934):
#: ICA 22 %, M1 61 %, M2 16 %, other 1–2 %.
LOCATION_PROBS = {"M1": 0.60, "ICA": 0.22, "M2": 0.16, "other": 0.02}
OTHER_KINDS = ("BA", "A1", "P1")


def smooth_curve(points: np.ndarray, step: float = 0.25) -> np.ndarray:
    """Catmull-Rom spline through control points, resampled every ``step`` mm."""
    p = np.asarray(points, float)
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    dense = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        t = np.linspace(0, 1, 40, endpoint=False)[:, None]
        dense.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                            + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    dense.append(p[-1:])
    curve = np.vstack(dense)
    seglen = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seglen)])
    n = max(2, int(np.ceil(s[-1] / step)) + 1)
    si = np.linspace(0, s[-1], n)
    return np.stack([np.interp(si, s, curve[:, k]) for k in range(3)], axis=1)


@dataclass
class SampledTree:
    """Dense centreline samples of all segments with per-sample attributes."""

    points: np.ndarray  # (N, 3) mm, head frame
    seg: np.ndarray  # (N,) segment index
    arc: np.ndarray  # (N,) arc length from the segment start (mm)
    radius: np.ndarray  # (N,) mm
    segments: list[Segment]
    lengths: np.ndarray  # (n_segments,) mm

    def index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.segments) if s.name == name)

    def descendants(self, name: str) -> list[str]:
        """Names of all segments downstream of ``name`` (not including it)."""
        out, frontier = [], [name]
        while frontier:
            cur = frontier.pop()
            kids = [s.name for s in self.segments if s.parent == cur and s.name not in out]
            out += kids
            frontier += kids
        return out


def sample_tree(rng: np.random.Generator, jitter_mm: float = 1.5) -> SampledTree:
    """Per-case tree: control points jittered, curves smoothed and sampled."""
    segs = vessel_tree()
    # Shared junction points must move together: jitter by rounded control point.
    moves: dict[tuple, np.ndarray] = {}

    def moved(pt):
        key = tuple(np.round(pt, 1))
        if key not in moves:
            moves[key] = rng.normal(0, jitter_mm, 3)
        return np.asarray(pt, float) + moves[key]

    pts, seg_idx, arc, rad, lengths = [], [], [], [], []
    for i, s in enumerate(segs):
        curve = smooth_curve(np.array([moved(p) for p in s.points]))
        steps = np.linalg.norm(np.diff(curve, axis=0), axis=1)
        a = np.concatenate([[0], np.cumsum(steps)])
        frac = a / max(a[-1], 1e-6)
        scale = rng.uniform(0.92, 1.08)
        r = 0.5 * scale * (s.diameter[0] + (s.diameter[1] - s.diameter[0]) * frac)
        pts.append(curve)
        seg_idx.append(np.full(len(curve), i))
        arc.append(a)
        rad.append(r)
        lengths.append(a[-1])
    return SampledTree(np.vstack(pts), np.concatenate(seg_idx), np.concatenate(arc),
                       np.concatenate(rad), segs, np.asarray(lengths))
