"""Geometry of the phantom head: the Circle-of-Willis vessel tree and the tissues around it.

Everything here lives in the *anatomy frame*: millimetres, LPS axes (x to the patient's
left, y posterior, z superior) with the origin at the centre of the Circle of Willis.
:mod:`clotseg.synth.phantom` places this frame in the scanner (head pose) and samples it
on a voxel grid, so nothing in this module knows about voxels except the partial-volume
width passed to :func:`tissue_fields`.

Vessel diameters and lengths (published figures, sources inline): cavernous ICA 5.0 mm,
ICA terminus 3.6 mm, M1 3.1 mm with MCA length 22.5 ± 8.1 mm, M2 2.4 mm (Rai, JNIS 5(4):371); A1 2.05 mm,
length ≈ 14 mm, AComm 1.16 mm (Folia Morphol 2018); P1 1.8–1.9 mm (Turk Neurosurg);
basilar 3.6 → 3.1 mm, length 27 mm (Rai, JNIS 5(6):597). Completeness of the circle:
complete anterior part 77 %, whole circle 16.6 % (Naveen 2015).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

#: Sample spacing along the centrelines (mm); fine enough that the distance to the nearest
#: sample is within 0.01 mm of the distance to the curve.
STEP_MM = 0.2


@dataclass(frozen=True)
class Segment:
    """One vessel segment: control points (mm), end diameters (mm) and its parent."""

    name: str  # e.g. "M1_L"
    kind: str  # ICA, M1, M2, A1, A2, ACOM, PCOM, BA, P1, P2, BR (small branch)
    points: tuple[tuple[float, float, float], ...]
    diameter: tuple[float, float]  # proximal, distal
    parent: str | None
    cistern: bool = True  # runs in a CSF cistern (sleeve of CSF around it)


@dataclass
class SampledTree:
    """Dense, evenly spaced centreline samples of every segment."""

    segments: list[Segment]
    points: list[np.ndarray]  # per segment (n_i, 3) mm
    radius: list[np.ndarray]  # per segment (n_i,) mm
    arc: list[np.ndarray]  # per segment (n_i,) arc length from the segment start, mm

    def index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.segments) if s.name == name)

    def length(self, name: str) -> float:
        return float(self.arc[self.index(name)][-1])

    def children(self, name: str) -> list[str]:
        return [s.name for s in self.segments if s.parent == name and s.kind != "BR"]

    def descendants(self, name: str) -> list[str]:
        """All segments downstream of ``name`` (not including it)."""
        out, todo = [], [name]
        while todo:
            kids = [k for k in self.children(todo.pop()) if k not in out]
            out += kids
            todo += kids
        return out


def _side(s: float, m1_len: float, a1_scale: float, pcom: float | None,
          rng: np.random.Generator) -> list[Segment]:
    """Segments of one hemisphere; ``s`` = +1 left, -1 right (LPS x)."""
    side = "L" if s > 0 else "R"
    j = lambda sd=1.0: rng.normal(0.0, sd, 3)  # noqa: E731 - control-point jitter
    term = np.array([s * 13, 0, 0]) + j(0.8)  # ICA terminus
    # ICA from the cavernous segment, through the siphon's anterior genu (forward then up
    # and back), to the terminus: the "C" of the carotid siphon in a lateral view.
    ica = [np.array(p, float) + j() for p in
           ((s * 16, 7, -34), (s * 17, 2, -25), (s * 16.5, -7, -20), (s * 15, -10, -12),
            (s * 14, -5, -5))] + [term]
    # M1 runs laterally in the Sylvian cistern, slightly forward and up.
    m1_dir = np.array([s * 0.96, 0.1, 0.2]) + j(0.05)
    m1_dir /= np.linalg.norm(m1_dir)
    bif = term + m1_dir * m1_len
    m1 = [term, (term + bif) / 2 + np.array([0, -2, 1]) + j(0.8), bif]
    m2a = [bif, bif + np.array([s * 4, -3, 6]) + j(), bif + np.array([s * 6, -5, 16]) + j()]
    m2b = [bif, bif + np.array([s * 6, 3, 3]) + j(), bif + np.array([s * 9, 8, 11]) + j()]
    a1_end = np.array([s * 2.2, -13, 4]) + j(0.5)
    a1 = [term, np.array([s * 7, -8, 2]) + j(0.7), a1_end]
    a2 = [a1_end, np.array([s * 2.4, -17, 13]) + j(0.7), np.array([s * 2.6, -15, 26]) + j()]
    pj = np.array([s * 9, 13, -2.5]) + j(0.6)  # P1/P2 junction (PComm joins here)
    p1 = [np.array([0.0, 13.0, -3.0]), np.array([s * 5, 12.5, -3]) + j(0.5), pj]
    p2 = [pj, np.array([s * 16, 18, 0]) + j(), np.array([s * 21, 26, 4]) + j(),
          np.array([s * 22, 34, 7]) + j()]
    segs = [
        Segment(f"ICA_{side}", "ICA", _tup(ica), (5.0, 3.6), None, cistern=False),
        Segment(f"M1_{side}", "M1", _tup(m1), (3.1, 2.8), f"ICA_{side}"),
        Segment(f"M2a_{side}", "M2", _tup(m2a), (2.4, 2.0), f"M1_{side}"),
        Segment(f"M2b_{side}", "M2", _tup(m2b), (2.4, 2.0), f"M1_{side}"),
        Segment(f"A1_{side}", "A1", _tup(a1), (2.05 * a1_scale, 2.0 * a1_scale), f"ICA_{side}"),
        Segment(f"A2_{side}", "A2", _tup(a2), (2.0, 1.7), f"A1_{side}"),
        Segment(f"P1_{side}", "P1", _tup(p1), (1.85, 1.8), "BA"),
        Segment(f"P2_{side}", "P2", _tup(p2), (1.8, 1.5), f"P1_{side}"),
    ]
    if pcom is not None:  # PComm from the supraclinoid ICA back to the P1/P2 junction
        segs.append(Segment(f"PCOM_{side}", "PCOM", _tup([ica[-2], (ica[-2] + pj) / 2 + j(0.5),
                                                          pj]), (pcom, pcom), f"ICA_{side}"))
    # Small branches (lenticulostriate and cortical, ≈ 0.6–1.1 mm): thin, faint tubes that
    # look like partial-volume "grey vessels" on CTA; not part of the clot location mix.
    for k in range(int(rng.integers(1, 4))):
        root = m1[1] + (bif - m1[1]) * rng.uniform(-0.6, 0.6)
        tip = root + np.array([s * rng.uniform(-2, 6), rng.uniform(-4, 4), rng.uniform(9, 18)])
        mid = (root + tip) / 2 + j(1.5)
        d = float(rng.uniform(0.6, 1.1))
        segs.append(Segment(f"BR{k}_{side}", "BR", _tup([root, mid, tip]), (d, d * 0.8),
                            f"M1_{side}"))
    return segs


def _tup(points) -> tuple[tuple[float, float, float], ...]:
    return tuple(tuple(float(v) for v in p) for p in points)  # type: ignore[misc]


def build_tree(rng: np.random.Generator) -> tuple[list[Segment], dict]:
    """Draw one patient's vessel tree; returns the segments and the variant drawn."""
    # MCA length 22.5 ± 8.1 mm (Rai, JNIS 5(4):371), kept to what the ROI can show.
    m1_len = np.clip(rng.normal(22.5, 8.1, 2), 15.0, 30.0)
    # Anterior circle complete in 77 % (Naveen 2015): otherwise no AComm or one thin A1.
    anterior = "complete" if rng.random() < 0.77 else str(rng.choice(["no_acom", "thin_a1"]))
    thin_side = int(rng.integers(2))
    # PComm present on each side half the time: whole circle complete in ≈ 0.77 / 4 ≈ 19 %
    # (16.6 %, Naveen 2015). PComm ≈ 0.9–1.5 mm.
    pcom = [float(rng.uniform(0.9, 1.5)) if rng.random() < 0.5 else None for _ in range(2)]
    segs: list[Segment] = []
    for k, s in enumerate((-1.0, 1.0)):
        a1_scale = 0.5 if (anterior == "thin_a1" and k == thin_side) else 1.0
        segs += _side(s, float(m1_len[k]), a1_scale, pcom[k], rng)
    a1_ends = {sg.name: sg.points[-1] for sg in segs if sg.kind == "A1"}
    if anterior != "no_acom":  # AComm 1.16 mm (Folia Morphol 2018)
        left, right = np.array(a1_ends["A1_L"]), np.array(a1_ends["A1_R"])
        segs.append(Segment("ACOM", "ACOM", _tup([right, (left + right) / 2 + [0, -0.6, 0],
                                                  left]), (1.16, 1.16), "A1_R"))
    # Basilar: 3.6 mm proximal, 3.1 mm distal, ≈ 27 mm long (Rai, JNIS 5(6):597).
    ba = [np.array([0.0, 21.0, -28.0]) + rng.normal(0, 1, 3),
          np.array([0.6, 17.0, -15.0]) + rng.normal(0, 1, 3), np.array([0.0, 13.0, -3.0])]
    segs.append(Segment("BA", "BA", _tup(ba), (3.6, 3.1), None))
    variant = {"m1_length_mm": [float(v) for v in m1_len], "anterior": anterior,
               "pcom": [p is not None for p in pcom]}
    return segs, variant


def smooth_curve(points, step: float = STEP_MM) -> np.ndarray:
    """Cubic spline through control points (chord-length parameter), resampled every
    ``step`` mm of arc length."""
    p = np.asarray(points, float)
    t = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    spline = CubicSpline(t, p, bc_type="natural")
    dense = spline(np.linspace(0.0, t[-1], max(50, int(t[-1] / step) * 4)))
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    si = np.linspace(0.0, s[-1], max(2, int(np.ceil(s[-1] / step)) + 1))
    return np.stack([np.interp(si, s, dense[:, k]) for k in range(3)], axis=1)


def sample_tree(segments: list[Segment], rng: np.random.Generator) -> SampledTree:
    """Sample every segment's centreline; radii taper linearly with a per-case ±8 % scale."""
    pts, rad, arc = [], [], []
    scale = rng.uniform(0.92, 1.08)
    for sg in segments:
        curve = smooth_curve(sg.points)
        a = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
        frac = a / max(a[-1], 1e-6)
        r = 0.5 * scale * (sg.diameter[0] + (sg.diameter[1] - sg.diameter[0]) * frac)
        pts.append(curve)
        rad.append(r)
        arc.append(a)
    return SampledTree(list(segments), pts, rad, arc)


# --- Tissues -------------------------------------------------------------------------


@dataclass
class Head:
    """Per-patient tissue values (HU) and shapes around the Circle of Willis."""

    gm: float  # grey matter 37–45 HU (Buzug/Prokop)
    wm: float  # white matter 20–30 HU (Buzug/Prokop)
    csf: float  # CSF ≈ 15 HU or less (teaching sources)
    bone: float  # cortical bone 700–1900 HU (teaching sources)
    soft: float  # extracranial soft tissue
    size: float  # head size factor (skull vault)
    cistern: np.ndarray  # scale of the basal cistern (3,)
    sinus: float  # pneumatisation of the sphenoid sinus (0.5–0.85 of the body)
    texture: tuple = field(repr=False)  # random plane waves: grey/white matter pattern
    sulci: tuple = field(repr=False)  # random plane waves: sulcal CSF


def _waves(rng: np.random.Generator, n: int, wavelength: tuple[float, float]) -> tuple:
    """Random plane waves whose sum is a smooth, roughly isotropic random field; defined
    everywhere, so any field of view (and a moved NCCT) sees the same pattern."""
    k = rng.normal(size=(n, 3))
    k *= (2 * np.pi / rng.uniform(*wavelength, n) / np.linalg.norm(k, axis=1))[:, None]
    return k.astype(np.float32), rng.uniform(0, 2 * np.pi, n).astype(np.float32)


def wave_field(waves: tuple, x, y, z) -> np.ndarray:
    """Unit-variance sum of plane waves at anatomy-frame points."""
    k, phase = waves
    out = np.zeros(np.broadcast(x, y, z).shape, np.float32)
    for (kx, ky, kz), ph in zip(k, phase):
        out += np.cos(kx * x + ky * y + kz * z + ph)
    return out * np.float32(np.sqrt(2.0 / len(phase)))


def draw_head(rng: np.random.Generator) -> Head:
    return Head(gm=float(rng.uniform(37, 45)), wm=float(rng.uniform(20, 30)),
                csf=float(rng.uniform(4, 14)), bone=float(rng.uniform(1000, 1700)),
                soft=float(rng.uniform(35, 50)), size=float(rng.uniform(0.92, 1.08)),
                cistern=rng.uniform(0.85, 1.15, 3), sinus=float(rng.uniform(0.5, 0.85)),
                texture=_waves(rng, 14, (7.0, 18.0)), sulci=_waves(rng, 14, (10.0, 25.0)))


class Sampler:
    """Anatomy-frame coordinates of every voxel centre of a grid, plus index-space boxes
    so that local structures are evaluated only where they can be (speed)."""

    def __init__(self, shape, lin: np.ndarray, off: np.ndarray):
        self.shape = tuple(int(n) for n in shape)
        self.lin, self.off = np.asarray(lin, float), np.asarray(off, float)  # a = lin @ i + off
        self._inv = np.linalg.inv(self.lin)
        axes = [np.arange(n, dtype=np.float32) for n in self.shape]
        self.xyz = [np.float32(self.off[c]) + np.float32(self.lin[c, 0]) * axes[0][:, None, None]
                    + np.float32(self.lin[c, 1]) * axes[1][None, :, None]
                    + np.float32(self.lin[c, 2]) * axes[2][None, None, :] for c in range(3)]

    def box(self, points, margin_mm: float):
        """Slices of the index box holding anatomy ``points`` (n, 3) ± a margin, or None."""
        idx = (np.atleast_2d(points) - self.off) @ self._inv.T
        pad = margin_mm * np.linalg.norm(self._inv, axis=1)  # mm -> voxels along each axis
        lo = np.maximum(np.floor(idx.min(0) - pad), 0).astype(int)
        hi = np.minimum(np.ceil(idx.max(0) + pad) + 1, self.shape).astype(int)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def coords(self, sl=None):
        return tuple(c if sl is None else c[sl] for c in self.xyz)

    def smooth(self, fn) -> np.ndarray:
        """``fn(x, y, z)`` for a field that varies slowly over two voxels: evaluated on
        every second voxel and linearly interpolated (8× fewer evaluations)."""
        coarse = Sampler([n // 2 + 1 for n in self.shape], self.lin * 2.0, self.off)
        return upsample2(np.asarray(fn(*coarse.coords()), np.float32), self.shape)


def upsample2(coarse: np.ndarray, shape) -> np.ndarray:
    """Linear interpolation of samples at even indices onto every index of ``shape``
    (separable; much cheaper than a general resampler for this fixed factor)."""
    out = coarse
    for ax, n in enumerate(shape):
        a = np.moveaxis(out, ax, 0)
        up = np.empty((n,) + a.shape[1:], np.float32)
        up[0::2] = a[: (n + 1) // 2]
        up[1::2] = 0.5 * (a[: n // 2] + a[1: n // 2 + 1])
        out = np.moveaxis(up, 0, ax)
    return np.ascontiguousarray(out)


def _ellipsoid_sd(x, y, z, c, semi):
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid."""
    r = np.sqrt(((x - c[0]) / semi[0]) ** 2 + ((y - c[1]) / semi[1]) ** 2
                + ((z - c[2]) / semi[2]) ** 2)
    return (r - 1.0) * min(semi)


def _capsule_sd(x, y, z, a, b, radius):
    """Signed distance to a capsule (segment a–b thickened by ``radius``)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    ab = b - a
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / (ab @ ab), 0, 1)
    return np.sqrt((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2
                   + (z - a[2] - t * ab[2]) ** 2) - radius


def _frac(sd, width: float):
    """Partial-volume fraction inside a surface from its signed distance."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def _ellipsoid(c, semi):
    """(bounding points, signed-distance function) of an ellipsoid."""
    c, semi = np.asarray(c, float), np.asarray(semi, float)
    return np.stack([c - semi, c + semi]), lambda x, y, z: _ellipsoid_sd(x, y, z, c, semi)


def _capsule(a, b, radius):
    return (np.stack([np.asarray(a, float), np.asarray(b, float)]),
            lambda x, y, z: _capsule_sd(x, y, z, a, b, radius))


def _paint(out: np.ndarray, smp: Sampler, shape_def, pv: float, margin: float = 0.0,
           clip=None) -> None:
    """``out = max(out, fraction inside the shape)``, evaluated in the shape's box only."""
    pts, sd = shape_def
    sl = smp.box(pts, pv + margin)
    if sl is None:
        return
    x, y, z = smp.coords(sl)
    d = sd(x, y, z)
    if clip is not None:
        d = np.maximum(d, clip(x, y, z))
    np.maximum(out[sl], _frac(d, pv).astype(np.float32), out=out[sl])


def tissue_fields(smp: Sampler, head: Head, pv: float) -> dict[str, np.ndarray]:
    """NCCT-like tissue HU and region fractions on a sampler's grid.

    Returns ``ncct`` (HU before vessels), the ``bone``, ``brain``, ``csf`` and
    ``pituitary`` fractions (for CTA enhancement and streaks). ``pv`` is the
    partial-volume width (≈ voxel size) that anti-aliases every edge.
    """
    h = head
    x, y, z = smp.coords()
    zeros = lambda: np.zeros(smp.shape, np.float32)  # noqa: E731
    tex = smp.smooth(lambda x, y, z: wave_field(h.texture, x, y, z))
    gm_frac = 1.0 / (1.0 + np.exp(-1.6 * tex - 0.3))
    hu = h.wm + (h.gm - h.wm) * gm_frac
    # Sulcal CSF: thin sheets where the second field crosses zero, away from the centre.
    sul = smp.smooth(lambda x, y, z: wave_field(h.sulci, x, y, z))
    far = smp.smooth(lambda x, y, z: np.clip((np.sqrt(x * x + (y * 0.8) ** 2) - 25.0) / 10.0,
                                             0.0, 1.0))
    csf = (np.clip(1.0 - np.abs(sul) / 0.18, 0.0, 1.0) * 0.8 * far).astype(np.float32)
    # Basal (suprasellar) cistern around the circle, interhemispheric fissure, 3rd ventricle.
    c = h.cistern
    _paint(csf, smp, _ellipsoid((0, 3, -1), (18 * c[0], 15 * c[1], 6 * c[2])), pv)
    fissure = np.maximum(np.maximum(np.abs(x) - 1.2, y + 14.0), 2.0 - z)  # x≈0, y<-14, z>2
    np.maximum(csf, _frac(fissure, pv), out=csf)
    _paint(csf, smp, _ellipsoid((0, 6, 12), (2.2, 9, 8)), pv)
    # Brainstem (midbrain and pons) with a CSF rim (ambient / prepontine cisterns).
    stem, rim = zeros(), zeros()
    for e in ((0, 28, 4), (12, 10, 9)), ((0, 36, -22), (15, 12, 15)):
        _paint(stem, smp, _ellipsoid(*e), pv)
        _paint(rim, smp, _ellipsoid(e[0], np.asarray(e[1]) + 1.5), pv)
    hu = hu * (1 - stem) + (h.wm + 6) * stem
    csf = np.maximum(csf * (1 - stem), 0.7 * (rim - stem))
    hu = hu * (1 - csf) + h.csf * csf
    # Skull base: floor of the cranial fossae, sphenoid body (with its air sinus),
    # anterior clinoid processes, dorsum sellae/clivus and petrous ridges (700–1900 HU).
    # Floor height: middle fossae ≈ -36 mm, higher in the midline (sella), anterior fossa
    # (orbital roofs) ≈ -22 mm, much deeper behind the petrous ridges.
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    floor = smp.smooth(lambda x, y, z: z - (-36.0 + 6.0 * np.exp(-((np.abs(x) - 8) / 10) ** 2)
                                            + 14.0 * sig((-y - 30) / 4)
                                            - 16.0 * sig((y - 22) / 4)))
    below = _frac(floor, pv)
    bone = _frac(np.abs(floor + 2.5) - 2.5, pv).astype(np.float32)
    _paint(bone, smp, _ellipsoid((0, -8, -28), (13, 13, 10)), pv)  # sphenoid body
    for s in (-1.0, 1.0):
        _paint(bone, smp, _ellipsoid((s * 9.5, -13, -7), (3, 5.5, 2.2)), pv)  # clinoid
        _paint(bone, smp, _capsule((s * 19, 17, -29), (s * 46, 33, -27), 6.0), pv)  # petrous
    _paint(bone, smp, _capsule((0, 7, -12), (0, 14, -44), 3.5), pv,
           clip=lambda x, y, z: np.abs(x) - 9)  # dorsum sellae and clivus
    bone_hu = h.bone * (0.85 + 0.15 * np.tanh(tex))
    soft = below * (1 - bone)  # outside the skull base: soft tissue
    hu = hu * (1 - np.maximum(bone, soft)) + h.soft * soft + bone_hu * bone
    air = zeros()
    _paint(air, smp, _ellipsoid((0, -10, -29), (13 * h.sinus, 12 * h.sinus, 9 * h.sinus)), pv)
    hu = hu * (1 - air) - 1000.0 * air
    pit = zeros()  # pituitary gland in the sella, on top of the sphenoid body
    _paint(pit, smp, _ellipsoid((0, -6, -16), (5, 4, 3)), pv)
    hu = hu * (1 - pit) + (h.wm + 15) * pit
    # Skull vault, scalp and the air around the head (seen by large fields of view).
    g = h.size
    vault = smp.smooth(lambda x, y, z: _ellipsoid_sd(x, y, z, (0, 6, 30), (68 * g, 86 * g, 78 * g)))
    neck = smp.smooth(lambda x, y, z: _ellipsoid_sd(x, y, z, (0, 0, -62), (56, 72, 50)))
    inner = _frac(vault + 7.0, pv)  # 7 mm skull
    skin = np.maximum(_frac(vault - 5.0, pv), _frac(neck, pv))  # 5 mm scalp
    skull = np.clip(_frac(vault, pv) - inner, 0, 1) * (1 - below)
    hu = hu * inner + (1 - inner) * h.soft
    hu = hu * (1 - skull) + bone_hu * skull
    hu = hu * skin - 1000.0 * (1 - skin)
    bone = np.maximum(bone * inner, skull)
    brain = np.clip(inner - csf - bone - air - soft - pit, 0.0, 1.0)
    return {"ncct": hu.astype(np.float32), "bone": bone, "brain": brain, "pituitary": pit,
            "csf": csf}


#: Cavernous sinus (venous, around the cavernous ICA): enhances on CTA.
CAVERNOUS = [((s * 16.5, -2.0, -24.0), (5.5, 11.0, 6.0)) for s in (-1.0, 1.0)]


def cavernous_fraction(smp: Sampler, pv: float) -> np.ndarray:
    out = np.zeros(smp.shape, np.float32)
    for c, s in CAVERNOUS:
        _paint(out, smp, _ellipsoid(c, s), pv)
    return out


#: Dense bone that causes beam-hardening streaks (anatomy frame, mm).
STREAK_SOURCES = np.array([[-30.0, 25.0, -28.0], [30.0, 25.0, -28.0], [0.0, 10.0, -18.0]])
