"""One synthetic patient: CTA, NCCT and clot mask of a Circle-of-Willis region.

The anatomy is defined in physical space (mm) and sampled on a grid with random spacing,
origin and direction, so a reader that ignores the geometry gets it wrong. Figures come
from DOMAIN.md (sources cited next to each number). The volume is an ROI around the
Circle of Willis (like the original research code's Slicer ROIs), so the field of view is
fixed in mm and the array size follows from the spacing drawn for each case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from clotseg.io.volume import Volume
from clotseg.synth.anatomy import LOCATION_PROBS, OTHER_KINDS, SampledTree, sample_tree

#: Field of view (mm, L-P-S) and spacing ranges (in-plane, slice) per size. The DESIGN's
#: in-plane 0.4–1.0 / slice 0.5–2.5 mm ranges are honoured where the array size allows.
SIZES = {
    "small": {"fov": (96.0, 76.0, 58.0), "inplane": (0.85, 1.0), "slice": (1.0, 1.4)},
    "medium": {"fov": (96.0, 80.0, 60.0), "inplane": (0.55, 0.62), "slice": (0.7, 0.8)},
    "full": {"fov": (110.0, 96.0, 72.0), "inplane": (0.4, 0.45), "slice": (0.5, 0.6)},
}


@dataclass
class SynthCase:
    """A generated case: volumes on one CTA grid (NCCT may be moved) and ground truth."""

    cta: Volume
    ncct: Volume
    clot: Volume
    truth: dict = field(default_factory=dict)


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a cohort: independent of the cohort size."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


_STORAGE = [  # direction matrices (columns = array axes in LPS) for stored orientations
    np.eye(3),  # LPS axial
    np.diag([-1.0, -1.0, 1.0]),  # RAS-like axial
    np.diag([1.0, 1.0, -1.0]),  # axial, slices stored top to bottom
    np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),  # coronal-stored
]


def _grid(rng: np.random.Generator, size: str, center: np.ndarray):
    cfg = SIZES[size]
    direction = _STORAGE[rng.integers(len(_STORAGE))] if rng.random() < 0.7 else np.eye(3)
    if rng.random() < 0.4:  # small oblique tilt, as from gantry-aligned reconstructions
        direction = _rotation(rng.uniform(-10, 10, 3) * np.array([1, 0.3, 0.3])) @ direction
    inplane, slice_ = rng.uniform(*cfg["inplane"]), rng.uniform(*cfg["slice"])
    spacing, shape = np.zeros(3), np.zeros(3, int)
    for a in range(3):
        patient_axis = int(np.argmax(np.abs(direction[:, a])))
        spacing[a] = slice_ if patient_axis == 2 else inplane
        shape[a] = int(round(cfg["fov"][patient_axis] / spacing[a]))
    spacing = np.round(spacing, 4)
    offset = rng.uniform(-3, 3, 3)  # the ROI is not perfectly centred on the CoW
    origin = center + offset - direction @ (spacing * (shape - 1) / 2.0)
    return tuple(int(s) for s in shape), spacing, origin, direction


def _physical_points(shape, spacing, origin, direction) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    return (idx * spacing.astype(np.float32)) @ direction.T.astype(np.float32) + origin


def make_case(seed: int, size: str = "small", *, registered: bool = True,
              clot: bool | None = None) -> SynthCase:
    """Generate one synthetic patient, deterministic in ``seed``.

    ``clot=None`` draws clot-free cases with probability 0.15; ``registered=False`` moves
    the NCCT anatomy by a random rigid transform (≤ 2 mm, ≤ 3°) recorded in ``truth``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    rng = np.random.default_rng(seed)
    has_clot = bool(rng.random() >= 0.15) if clot is None else bool(clot)
    tree = sample_tree(rng)
    frame = _rotation(rng.normal(0, 4, 3))  # head pose: anatomy frame -> LPS
    center = rng.normal(0, 20, 3) + np.array([0, 10, 40])  # CoW centre in LPS (mm)
    shape, spacing, origin, direction = _grid(rng, size, center)
    lesion = _draw_clots(rng, tree) if has_clot else []
    values = _vessel_values(rng, tree, lesion)
    texture = _texture_params(rng)
    calcs = _calcifications(rng, tree)
    streak = rng.uniform(15, 35)
    # Drawn for every case so that registered and unregistered versions share the CTA.
    rot, trans = rng.uniform(-3, 3, 3), rng.uniform(-2, 2, 3)

    pts = _physical_points(shape, spacing, origin, direction)
    q_cta = (pts - center) @ frame  # LPS -> anatomy frame (rows)
    cta_hu, ncct_hu, clot_frac = _render(q_cta, tree, values, texture, calcs, streak, lesion)
    move = {"rotation_deg": [0.0, 0.0, 0.0], "translation_mm": [0.0, 0.0, 0.0]}
    if not registered:
        # NCCT shows the anatomy moved by the rigid transform x -> R (x - c) + c + t.
        r = _rotation(rot)
        moved_pts = (pts - center - trans) @ r + center  # inverse map of each grid point
        _, ncct_hu, _ = _render((moved_pts - center) @ frame, tree, values, texture, calcs,
                                streak, lesion)
        move = {"rotation_deg": rot.tolist(), "translation_mm": trans.tolist(),
                "center_mm": center.tolist()}

    thickness = float(spacing[int(np.argmax(np.abs(direction[2, :])))])
    # Noise: σ ≈ 4 HU at 5 mm slices, ∝ 1/√thickness (Nakamura 2019).
    sigma = 4.0 * np.sqrt(5.0 / thickness)
    blur = 0.4 / spacing  # slight blur (partial volume of the scanner PSF), in voxels
    cta = _finish(cta_hu.reshape(shape), blur, sigma, rng)
    ncct = _finish(ncct_hu.reshape(shape), blur, sigma, rng)
    mask = (clot_frac.reshape(shape) >= 0.5).astype(np.uint8)
    geo = dict(spacing=spacing, origin=origin, direction=direction.ravel())
    cta_v, ncct_v, mask_v = Volume(cta, **geo), Volume(ncct, **geo), Volume(mask, **geo)
    truth = _truth(cta, ncct, mask, spacing, lesion, tree, size, thickness, sigma, move)
    return SynthCase(cta_v, ncct_v, mask_v, truth)


def _finish(hu: np.ndarray, blur, sigma: float, rng: np.random.Generator) -> np.ndarray:
    out = ndimage.gaussian_filter(hu.astype(np.float32), blur, truncate=2.5)
    out += rng.normal(0, sigma, out.shape).astype(np.float32)
    return np.round(out).astype(np.int16)  # scanners store integer HU


def _pick_segment(rng: np.random.Generator, tree: SampledTree):
    loc = rng.choice(list(LOCATION_PROBS), p=list(LOCATION_PROBS.values()))
    kinds = {"M1": ("M1",), "ICA": ("ICA",), "M2": ("M2",), "other": OTHER_KINDS}[loc]
    names = [s.name for s in tree.segments if s.kind in kinds]
    return str(loc), str(rng.choice(names))


def _draw_clots(rng: np.random.Generator, tree: SampledTree) -> list[dict]:
    """Clot intervals along one vessel (second fragment in ≈ 7 %, Gratz 2015)."""
    loc, name = _pick_segment(rng, tree)
    i = tree.index(name)
    seg_len = float(tree.lengths[i])
    # Length: median 16.1 mm, IQR 7.6–25.2 (Kim/Yoo 2013) -> lognormal sigma ≈ 0.7.
    length = float(np.clip(rng.lognormal(np.log(16.0), 0.7), 4.0, max(4.0, seg_len - 3.0)))
    if loc == "ICA":  # ICA / ICA-T clots sit in the distal ICA (terminus)
        start = seg_len - length - rng.uniform(0, 2)
    else:
        start = rng.uniform(0.5, max(0.6, seg_len - length - 2.5))
    start = max(0.0, start)
    # NCCT density 54 HU (99 % CI 47–61, Koo); ~20 % faint clots 43–48 HU without a
    # hyperdense sign (Santos 2016 whole-clot median 43.5 HU). Perviousness Δ: median
    # 12.5 HU (IQR 8.7–17.9, Berndt 2018) -> lognormal sigma 0.5.
    faint = rng.random() < 0.2
    hu = float(rng.uniform(43, 48) if faint else np.clip(rng.normal(55, 7), 47, 75))
    delta = float(np.clip(rng.lognormal(np.log(12.0), 0.5), 2.0, 45.0))
    clots = [{"segment": name, "location": loc, "start": start, "end": start + length,
              "ncct_hu": hu, "delta_hu": delta, "faint": faint}]
    if rng.random() < 0.07:
        gap = rng.uniform(3, 6)
        s2 = start + length + gap
        if s2 + 3 < seg_len:
            clots.append({**clots[0], "start": s2, "end": min(seg_len, s2 + rng.uniform(3, 8))})
    return clots


def _vessel_values(rng, tree: SampledTree, lesion: list[dict]):
    """Per-sample (CTA HU, NCCT HU, clot flag) along the centrelines."""
    # Contrast lumen: ICA 462 ± 17, MCA 406 ± 24 HU at good timing; 150 HU still "good
    # opacification" (Tomography 2021;7:59) -> bolus factor per case.
    bolus = rng.uniform(0.45, 1.0)
    lumen = np.where(np.isin(tree.seg, [i for i, s in enumerate(tree.segments)
                                        if s.kind in ("ICA", "BA")]), 462.0, 406.0) * bolus
    blood = rng.uniform(40, 43)  # flowing blood on NCCT 40–43 HU (Koo)
    cta = lumen + rng.normal(0, 8, len(lumen))
    ncct = np.full(len(lumen), blood)
    is_clot = np.zeros(len(lumen), bool)
    if lesion:
        distal_factor = rng.uniform(0.15, 0.6)  # collateral, delayed distal filling
        first = lesion[0]
        i = tree.index(first["segment"])
        downstream = [tree.index(n) for n in tree.descendants(first["segment"])]
        after = (tree.seg == i) & (tree.arc > first["end"])
        distal = after | np.isin(tree.seg, downstream)
        cta[distal] = blood + (cta[distal] - blood) * distal_factor
        for c in lesion:
            sel = (tree.seg == tree.index(c["segment"])) & (tree.arc >= c["start"]) & (
                tree.arc <= c["end"])
            is_clot |= sel
            ncct[sel] = c["ncct_hu"]
            cta[sel] = c["ncct_hu"] + c["delta_hu"]
    return cta, ncct, is_clot


def _texture_params(rng) -> dict:
    return {"k": rng.normal(0, 0.12, (6, 3)), "phase": rng.uniform(0, 2 * np.pi, 6),
            "gm": rng.uniform(37, 45), "wm": rng.uniform(20, 30), "csf": rng.uniform(2, 12),
            "bone": rng.uniform(900, 1500), "base_z": rng.uniform(-24, -19),
            "cistern": rng.uniform(0.8, 1.2, 3)}


def _calcifications(rng, tree: SampledTree) -> list[tuple[np.ndarray, float, float]]:
    """Siphon wall plaques: > 100 HU, often 200–800 HU, in 82 % at age ≈ 70 (Bos 2012)."""
    out = []
    if rng.random() > 0.8:
        return out
    ica = [i for i, s in enumerate(tree.segments) if s.kind == "ICA"]
    for _ in range(rng.integers(1, 4)):
        sel = np.flatnonzero(np.isin(tree.seg, ica) & (tree.arc > 4) & (tree.arc < 24))
        k = rng.choice(sel)
        nxt = min(k + 4, len(tree.points) - 1)
        tangent = tree.points[nxt] - tree.points[k]
        normal = np.cross(tangent, rng.normal(size=3))
        normal /= np.linalg.norm(normal) + 1e-9
        centre = tree.points[k] + normal * tree.radius[k] * 0.95
        out.append((centre, float(rng.uniform(0.6, 1.3)), float(rng.uniform(200, 800))))
    return out


def _render(q: np.ndarray, tree: SampledTree, values, texture: dict, calcs, streak: float,
            lesion):
    """HU of CTA and NCCT and clot partial volume at anatomy-frame points ``q`` (N, 3)."""
    t = texture
    # Brain: grey/white matter pattern from a few smooth waves (physical-space defined).
    wave = np.sin(q @ t["k"].T.astype(np.float32) + t["phase"].astype(np.float32)).sum(1)
    gm_frac = 1 / (1 + np.exp(-wave * 1.5))
    brain = t["wm"] + (t["gm"] - t["wm"]) * gm_frac
    # Basal cisterns around the Circle of Willis hold CSF (0–15 HU).
    c = t["cistern"]
    cist = (q[:, 0] / (34 * c[0])) ** 2 + ((q[:, 1] - 2) / (24 * c[1])) ** 2 + (
        (q[:, 2] - 1) / (9 * c[2])) ** 2
    csf_frac = np.clip((1.15 - cist) / 0.3, 0, 1)
    ncct = brain * (1 - csf_frac) + t["csf"] * csf_frac
    # Skull base (bone 700–1900 HU) below an undulating surface, with the sphenoid sinus.
    surface = t["base_z"] + 4 * np.sin(q[:, 0] / 9.0) + 3 * np.cos(q[:, 1] / 11.0)
    bone_frac = np.clip((surface - q[:, 2]) / 1.0 + 0.5, 0, 1)
    bone_hu = t["bone"] + 250 * np.sin(q[:, 0] / 3.0) * np.cos(q[:, 1] / 4.0)
    ncct = ncct * (1 - bone_frac) + bone_hu * bone_frac
    sinus = (q[:, 0] / 11) ** 2 + ((q[:, 1] + 22) / 8) ** 2 + ((q[:, 2] - t["base_z"] + 9) / 6) ** 2
    ncct = np.where(sinus < 1, -1000.0, ncct)
    # Anterior clinoid processes: bone right next to the ICA terminus.
    for s in (-1, 1):
        d = ((q[:, 0] - s * 11) / 3.5) ** 2 + ((q[:, 1] + 7) / 2.5) ** 2 + ((q[:, 2] + 9) / 2) ** 2
        ncct = np.where(d < 1, t["bone"] * 0.8, ncct)
    # Beam-hardening streaks between the petrous ridges (dark and bright bands).
    near_base = np.exp(-((q[:, 2] - t["base_z"] - 6) / 5) ** 2)
    band = np.sin((q[:, 1] + 0.35 * q[:, 0]) / 2.2)
    ncct = ncct + streak * near_base * band * (1 - bone_frac)
    cta = ncct + 4.0 * (1 - bone_frac) * (1 - csf_frac)  # slight parenchymal enhancement

    # Vessels: distance to the nearest centreline sample, partial-volume occupancy.
    kd = cKDTree(tree.points)
    lo, hi = tree.points.min(0) - 4, tree.points.max(0) + 4
    inside = np.flatnonzero(np.all((q >= lo) & (q <= hi), axis=1))
    dist, nn = kd.query(q[inside], distance_upper_bound=4.0)
    hit = np.isfinite(dist)
    inside, dist, nn = inside[hit], dist[hit], nn[hit]
    occ = np.clip((tree.radius[nn] - dist) / 0.6 + 0.5, 0, 1)
    v_cta, v_ncct, is_clot = values
    cta[inside] = cta[inside] * (1 - occ) + v_cta[nn] * occ
    ncct[inside] = ncct[inside] * (1 - occ) + v_ncct[nn] * occ
    clot_frac = np.zeros(len(q), np.float32)
    clot_frac[inside] = occ * is_clot[nn]
    # Calcified plaques: bright in both modalities.
    for centre, radius, hu in calcs:
        d = np.linalg.norm(q - centre, axis=1)
        f = np.clip((radius - d) / 0.5 + 0.5, 0, 1)
        cta = cta * (1 - f) + hu * f
        ncct = ncct * (1 - f) + hu * f
        clot_frac *= 1 - f
    return cta, ncct, clot_frac


def _truth(cta, ncct, mask, spacing, lesion, tree, size, thickness, sigma, move) -> dict:
    voxel = float(np.prod(spacing))
    m = mask.astype(bool)
    n = int(m.sum())
    has = bool(lesion) and n > 0
    return {
        "has_clot": has,
        "location": lesion[0]["location"] if has else "none",
        "segment": lesion[0]["segment"] if has else "",
        "n_fragments": len(lesion) if has else 0,
        "faint": bool(lesion[0]["faint"]) if has else False,
        "volume_mm3": n * voxel,
        "length_mm": float(sum(c["end"] - c["start"] for c in lesion)) if has else 0.0,
        "ncct_mean_hu": float(ncct[m].mean()) if has else float("nan"),
        "cta_mean_hu": float(cta[m].mean()) if has else float("nan"),
        "perviousness_hu": float(cta[m].mean() - ncct[m].mean()) if has else float("nan"),
        "drawn_ncct_hu": lesion[0]["ncct_hu"] if has else float("nan"),
        "drawn_delta_hu": lesion[0]["delta_hu"] if has else float("nan"),
        "spacing_x": float(spacing[0]), "spacing_y": float(spacing[1]),
        "spacing_z": float(spacing[2]), "slice_thickness": thickness, "noise_sigma": sigma,
        "size": size, "ncct_motion": move,
    }
