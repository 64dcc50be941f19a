"""One synthetic patient: CTA, NCCT and clot mask of a Circle-of-Willis region.

A case is made in two steps. :func:`plan_case` draws every random choice (anatomy, head
pose, grid, clot, distractors, motion) without rendering anything; :func:`render_case`
samples that plan on voxel grids. The anatomy is defined in physical LPS space and
sampled on a grid with random spacing, origin and direction (flips, permutations, gantry
tilt), so a reader that ignores the geometry gets it wrong. The volume is an ROI around
the Circle of Willis, like the original research code's ROIs.

Figures come from published stroke-imaging studies (source next to each number). Two distractors are not from
those studies but make each modality ambiguous on its own, as in real scans: *slow-flow
segments* (unopacified blood, e.g. inflow or delayed filling) that are dark on CTA but
normal blood on NCCT, and *small wall plaques* on the clot-bearing arteries that are
hyperdense on NCCT but bright on CTA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from clotseg.io.volume import Grid, Volume
from clotseg.synth import anatomy, large
from clotseg.synth.anatomy import Head, SampledTree

#: Array shape (L-R, P-A, S-I, before the storage permutation) and spacing ranges (mm)
#: per size; over the sizes the cohort spans in-plane 0.4–1.0 mm and slices 0.5–2.5 mm.
#: "small" is a fine ROI around the Circle of Willis (≈ 65 × 65 × 50 mm, like the original
#: research code's ROIs, kept on the clot) so that a clot spans enough voxels to learn
#: from on a CPU; "full" is a whole-head field of view with the coarse and thick-slice
#: part of the range (its slice count shrinks for thick slices: ≤ 200 mm of head).
SIZES: dict[str, dict] = {
    "small": {"shape": (96, 96, 48), "inplane": (0.6, 0.75), "slice": (0.9, 1.3)},
    "medium": {"shape": (160, 160, 80), "inplane": (0.45, 0.6), "slice": (0.6, 1.0)},
    "full": {"shape": (256, 256, 128), "inplane": (0.4, 1.0), "slice": (0.5, 2.5)},
    # A whole head as a scanner reconstructs it: 512 × 512 axial slices of 0.40–0.50 mm,
    # 280–400 thin slices of 0.5–0.625 mm from the vertex down below the skull base, and
    # an NCCT of 2.5–5 mm slices on its own grid (clotseg.synth.large renders it).
    "clinical": {"shape": (512, 512, 400), "inplane": (0.40, 0.50), "slice": (0.5, 0.625),
                 "slices": (280, 400), "coverage_mm": (175.0, 215.0), "axial": True,
                 "ncct_thickness_mm": (2.5, 5.0)},
}

#: Values of :attr:`SynthCase.labels`.
LABELS = {"background": 0, "lumen": 1, "clot": 2, "calcification": 3, "slow_flow": 4,
          "bone": 5}

#: Clot location mix (MR CLEAN Registry, JNIS 2023;15:e60, n = 934: ICA 22 %, M1 61 %,
#: M2 16 %, other 1 %); "other" rounded up to 2 % so that it occurs in small cohorts.
LOCATION_PROBS = {"M1": 0.60, "ICA": 0.22, "M2": 0.16, "other": 0.02}
LOCATION_KINDS = {"M1": ("M1",), "ICA": ("ICA",), "M2": ("M2",), "other": ("BA", "A1", "P1", "P2")}

#: Contrast lumen at good bolus timing: ICA 462 ± 17, MCA 406 ± 24, basilar 412 ± 22 HU
#: (Tomography 2021;7:59). The bolus factor per case scales this down to ≈ 150 HU, still
#: "good opacification" (Kim 2010 AJNR).
LUMEN_HU = {"ICA": (462.0, 17.0), "PCOM": (462.0, 17.0), "BA": (412.0, 22.0),
            "P1": (412.0, 22.0), "P2": (412.0, 22.0)}
MCA_LUMEN_HU = (406.0, 24.0)


@dataclass
class SynthCase:
    """A generated case: volumes, ground truth and a label map (all on the CTA grid except
    an unregistered NCCT, which has its own grid)."""

    cta: Volume
    ncct: Volume
    clot: Volume
    truth: dict = field(default_factory=dict)
    labels: Volume | None = None  # LABELS values, for tests and analysis


@dataclass
class CasePlan:
    """Every random choice of one case, before anything is rendered."""

    seed: int
    size: str
    tree: SampledTree
    variant: dict
    head: Head
    sleeves: np.ndarray  # CSF around each segment (mm; 0 outside cisterns)
    pose: np.ndarray  # (3, 3) anatomy frame -> LPS
    centre: np.ndarray  # LPS position of the anatomy origin (mm)
    grid: Grid  # CTA grid
    ncct_grid: Grid  # NCCT grid when unregistered
    motion: dict  # rigid NCCT motion (unregistered)
    values: list[dict]  # per segment: cta, ncct, label arrays along the samples
    flow: dict  # case-level blood values: bolus factor, NCCT blood HU, distal factor
    clots: list[dict]
    gaps: list[dict]
    plaques: list[dict]
    imaging: dict


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a cohort: depends on ``(seed, index)`` only, so case k
    is identical whatever the cohort size."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def make_case(seed: int, size: str = "small", *, registered: bool = True,
              clot: bool | None = None, ncct_thickness_mm: float | None = None) -> SynthCase:
    """Generate one synthetic patient, bit-for-bit deterministic in ``seed``.

    ``clot=None`` draws a clot-free case with probability 0.15; True/False forces it.
    ``registered=False`` gives the NCCT its own grid and moves its anatomy by a rigid
    transform (≤ 2 mm, ≤ 3°) recorded in ``truth["ncct_motion"]``; the CTA, mask and
    truth are the same as for ``registered=True``.
    ``ncct_thickness_mm`` reconstructs the NCCT at thick slices on its own grid (the
    ``clinical`` size draws 2.5–5 mm; see :func:`render_case`).
    """
    return render_case(plan_case(seed, size, clot=clot), registered=registered,
                       ncct_thickness_mm=ncct_thickness_mm)


# --- Planning --------------------------------------------------------------------------


def plan_case(seed: int, size: str = "small", *, clot: bool | None = None) -> CasePlan:
    """Draw all random choices of a case (independent streams, so that forcing ``clot``
    or choosing ``registered`` does not change the rest of the patient)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    r_anat, r_lesion, r_grid, r_motion, r_img = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5))
    segments, variant = anatomy.build_tree(r_anat)
    tree = anatomy.sample_tree(segments, r_anat)
    head = anatomy.draw_head(r_anat)
    # Cisternal arteries run in CSF (M1 in the Sylvian cistern, basilar in the prepontine
    # cistern): a partial sleeve of CSF, 0.8–2.5 mm, around each of them.
    sleeves = np.array([r_anat.uniform(0.8, 2.5) if sg.cistern and sg.kind != "BR" else 0.0
                        for sg in segments])
    pose = Rotation.from_euler("xyz", [np.clip(r_anat.normal(0, 6), -15, 15),
                                       r_anat.normal(0, 3), r_anat.normal(0, 4)],
                               degrees=True).as_matrix()
    centre = np.array([r_anat.normal(0, 8), r_anat.normal(0, 8), r_anat.uniform(-60, 40)])

    drawn = r_lesion.random() >= 0.15  # ≈ 15 % clot-free cases
    has_clot = drawn if clot is None else bool(clot)
    values, flow = _lumen_values(r_lesion, tree)
    clots = _draw_clots(r_lesion, tree) if has_clot else []
    gaps = _draw_gaps(r_lesion, tree, clots)
    _apply_lesions(r_lesion, tree, values, flow, clots, gaps, variant)
    _draw_stenosis(r_lesion, tree)
    plaques = _draw_plaques(r_lesion, tree)

    grid = _draw_grid(r_grid, size, pose, centre)
    if clots:
        grid = _keep_in_view(grid, _clot_points(tree, clots) @ pose.T + centre,
                             margin=float(r_grid.uniform(3.0, 12.0)))
    ncct_grid = _draw_grid(r_grid, size, pose, centre)
    motion = _draw_motion(r_motion, pose @ np.array([0.0, 2.0, -6.0]) + centre)
    imaging = {"psf_mm": float(r_img.uniform(0.3, 0.5)),
               "noise_scale": r_img.uniform(0.9, 1.1, 2),
               "cta_brain_enh": float(r_img.uniform(2, 5)),
               "cavernous_hu": float(r_img.uniform(60, 200)),
               "pituitary_hu": float(r_img.uniform(60, 140)),
               "streaks": [_draw_streaks(r_img) for _ in range(3)],
               "noise_seeds": r_img.integers(0, 2**63 - 1, 3)}
    if "ncct_thickness_mm" in SIZES[size]:
        imaging["ncct_thickness_mm"] = round(float(r_img.uniform(*SIZES[size]["ncct_thickness_mm"])), 3)
    return CasePlan(int(seed), size, tree, variant, head, sleeves, pose, centre, grid, ncct_grid, motion,
                    values, flow, clots, gaps, plaques, imaging)


def _lumen_values(rng: np.random.Generator, tree: SampledTree) -> tuple[list[dict], dict]:
    """Per-sample CTA/NCCT HU and label of the normal, patent tree."""
    bolus = rng.uniform(0.37, 1.0)  # bolus timing: lumen ≈ 150–460 HU
    blood = rng.uniform(40.0, 43.0)  # flowing blood on NCCT 40–43 HU (Koo)
    out = []
    for sg, arc in zip(tree.segments, tree.arc):
        mean, sd = LUMEN_HU.get(sg.kind, MCA_LUMEN_HU)
        lumen = rng.normal(mean, sd) * bolus * (1 + 0.04 * np.sin(arc / 6.0 + rng.uniform(0, 6)))
        out.append({"cta": lumen.astype(np.float32), "ncct": np.full(len(arc), blood, np.float32),
                    "label": np.full(len(arc), LABELS["lumen"], np.uint8)})
    return out, {"bolus": float(bolus), "blood": float(blood)}


def _draw_clots(rng: np.random.Generator, tree: SampledTree) -> list[dict]:
    """The clot (and a second fragment in ≈ 7 % of patients, Gratz 2015)."""
    loc = str(rng.choice(list(LOCATION_PROBS), p=list(LOCATION_PROBS.values())))
    names = [s.name for s in tree.segments if s.kind in LOCATION_KINDS[loc]]
    name = str(rng.choice(names))
    seg_len = tree.length(name)
    # Length: median 16.1 mm, IQR 7.6–25.2 (Kim/Yoo 2013 Stroke) -> lognormal, σ = 0.89;
    # clipped to fit the vessel.
    length = float(np.clip(rng.lognormal(np.log(16.1), 0.89), 4.0, seg_len - 1.5))
    if loc == "ICA" and rng.random() < 0.7:  # ICA-terminus ("ICA-T") clots
        start = seg_len - length - rng.uniform(0.0, 1.0)
    else:
        start = rng.uniform(0.5, max(0.6, seg_len - length - 0.5))
    # NCCT density: 54 HU (99 % CI 47–61, Koo), 61 ± 8 (Liebeskind 2011); 15 % faint
    # clots without a hyperdense sign, 43–48 HU (Santos 2016 whole-clot median 43.5 HU;
    # hyperdense sign absent in most fibrin-rich clots, Liebeskind 2011).
    faint = bool(rng.random() < 0.15)
    hu = float(rng.uniform(43, 48) if faint else np.clip(rng.normal(56, 7), 47, 78))
    # Perviousness Δ = CTA − NCCT: median 12.5 HU, IQR 8.7–17.9 (Berndt 2018) ->
    # lognormal σ = 0.53.
    delta = float(np.clip(rng.lognormal(np.log(12.5), 0.53), 1.0, 45.0))
    first = {"segment": name, "location": loc, "start": float(start),
             "end": float(start + length), "ncct_hu": hu, "delta_hu": delta, "faint": faint,
             "texture": rng.uniform(0, 2 * np.pi)}
    clots = [first]
    if rng.random() < 0.074:  # 7.4 % several fragments (Gratz 2015)
        gap, len2 = rng.uniform(4.0, 8.0), rng.uniform(3.0, 7.0)
        if first["end"] + gap + len2 < seg_len - 0.5:
            seg2, s2 = name, first["end"] + gap
        else:
            kids = tree.children(name)
            seg2 = str(rng.choice(kids)) if kids else ""
            s2 = rng.uniform(0.5, 2.0)
            if not seg2 or s2 + len2 > tree.length(seg2) - 0.5:
                seg2 = ""
        if seg2:
            clots.append({**first, "segment": seg2, "start": float(s2),
                          "end": float(s2 + len2)})
    return clots


def _draw_gaps(rng: np.random.Generator, tree: SampledTree, clots: list[dict]) -> list[dict]:
    """Slow-flow segments in ≈ 55 % of cases: barely opacified blood, about as dark on CTA
    as a clot (blood + 5–50 HU) but normal blood on NCCT, at the clots' usual locations."""
    gaps: list[dict] = []
    if rng.random() > 0.55:
        return gaps
    busy = {c["segment"] for c in clots}
    for _ in range(int(rng.integers(1, 4))):
        loc = str(rng.choice(["M1", "M2", "ICA", "other"], p=[0.4, 0.25, 0.15, 0.2]))
        names = [s.name for s in tree.segments
                 if s.kind in LOCATION_KINDS[loc] + (("PCOM",) if loc == "other" else ())
                 and s.name not in busy]
        if not names:
            continue
        name = str(rng.choice(names))
        seg_len = tree.length(name)
        length = min(rng.uniform(4.0, 14.0), seg_len - 1.0)
        start = rng.uniform(0.0, seg_len - length)
        gaps.append({"segment": name, "start": float(start), "end": float(start + length),
                     "excess_hu": float(rng.uniform(5.0, 50.0)),
                     "ramp_mm": float(rng.uniform(0.3, 1.2))})
        busy.add(name)
    return gaps


def _apply_lesions(rng, tree: SampledTree, values: list[dict], flow: dict, clots, gaps,
                   variant) -> None:
    """Write clot, reduced distal enhancement and slow-flow gaps into the sample values."""
    blood = flow["blood"]
    for g in gaps:
        v, arc = values[tree.index(g["segment"])], tree.arc[tree.index(g["segment"])]
        sel = (arc >= g["start"]) & (arc <= g["end"])
        ramp = np.clip(np.minimum(arc - g["start"], g["end"] - arc) / g["ramp_mm"], 0, 1)[sel]
        v["cta"][sel] = v["cta"][sel] * (1 - ramp) + (blood + g["excess_hu"]) * ramp
        v["label"][sel] = np.where(ramp > 0.5, LABELS["slow_flow"], v["label"][sel])
    if not clots:
        return
    # Distal to the occlusion the lumen fills late, through collaterals: less enhanced.
    first = clots[0]
    factor = rng.uniform(0.15, 0.7)
    distal = [first["segment"]] + tree.descendants(first["segment"])
    if first["location"] == "ICA":  # A1 refills through the AComm, PComm from behind
        keep = ("PCOM",) if variant["anterior"] == "no_acom" else ("PCOM", "A1", "A2")
        distal = [n for n in distal if tree.segments[tree.index(n)].kind not in keep]
    distal += [s.name for s in tree.segments if s.kind == "BR" and s.parent in distal]
    for n in distal:
        i = tree.index(n)
        sel = tree.arc[i] > first["end"] if n == first["segment"] else slice(None)
        v = values[i]
        v["cta"][sel] = blood + (v["cta"][sel] - blood) * factor
        v["label"][sel] = LABELS["slow_flow"]
    flow["distal_factor"] = float(factor)
    for c in clots:
        i = tree.index(c["segment"])
        arc, v = tree.arc[i], values[i]
        sel = (arc >= c["start"]) & (arc <= c["end"])
        hu = c["ncct_hu"] + 2.5 * np.sin(arc[sel] / 3.0 + c["texture"])  # heterogeneity
        v["ncct"][sel] = hu
        v["cta"][sel] = hu + c["delta_hu"]
        v["label"][sel] = LABELS["clot"]


def _draw_stenosis(rng: np.random.Generator, tree: SampledTree) -> None:
    """Focal narrowing (≈ 30 % of cases): lowers CTA by partial volume without a clot."""
    if rng.random() > 0.3:
        return
    names = [s.name for s in tree.segments if s.kind in ("ICA", "M1", "BA", "P1", "M2")]
    i = tree.index(str(rng.choice(names)))
    arc = tree.arc[i]
    centre, half = rng.uniform(2.0, max(2.5, arc[-1] - 2.0)), rng.uniform(1.5, 3.5)
    depth = rng.uniform(0.3, 0.55)
    bump = np.clip(1 - np.abs(arc - centre) / half, 0, 1)
    tree.radius[i] = tree.radius[i] * (1 - depth * (0.5 - 0.5 * np.cos(np.pi * bump)))


def _draw_plaques(rng: np.random.Generator, tree: SampledTree) -> list[dict]:
    """Wall calcifications: in the ICA siphon in 82 % (Bos 2012 Stroke, > 100 HU, often
    200–800); small plaques on other arteries in 25 % of cases."""
    plaques = []
    ica = [s.name for s in tree.segments if s.kind == "ICA"]
    n_ica = int(rng.integers(1, 5)) if rng.random() < 0.82 else 0
    other = [s.name for s in tree.segments if s.kind in ("M1", "BA", "P1", "M2", "A1")]
    n_other = int(rng.random() < 0.25)
    for k in range(n_ica + n_other):
        name = str(rng.choice(ica if k < n_ica else other))
        i = tree.index(name)
        arc = tree.arc[i]
        big = k < n_ica
        length = rng.uniform(2.0, 8.0) if big else rng.uniform(1.0, 3.0)
        lo = 4.0 if big else 1.0
        a0 = rng.uniform(lo, max(lo + 0.1, arc[-1] - length - 1.0))
        j0, j1 = np.searchsorted(arc, [a0, a0 + length])
        j1 = min(j1, len(arc) - 1)
        tangent = tree.points[i][j1] - tree.points[i][j0]
        normal = np.cross(tangent, rng.normal(size=3))
        normal /= np.linalg.norm(normal) + 1e-9
        ends = [tree.points[i][j] + normal * tree.radius[i][j] for j in (j0, j1)]
        plaques.append({"a": ends[0], "b": ends[1],
                        "radius": float(rng.uniform(0.6, 1.3) if big else rng.uniform(0.4, 0.7)),
                        "hu": float(rng.uniform(200, 900) if big else rng.uniform(150, 500)),
                        "segment": name})
    return plaques


def _draw_streaks(rng: np.random.Generator) -> dict:
    """Beam-hardening streak pattern of one acquisition (radial streaks around dense
    bone, dark band between the petrous ridges)."""
    return {"amp": float(rng.uniform(8, 30)), "bar": float(rng.uniform(8, 30)),
            "lobes": rng.integers(5, 10, 3), "phase": rng.uniform(0, 2 * np.pi, 3)}


#: Stored orientations: direction matrices whose columns are the array axes in LPS.
_STORAGE = [
    np.eye(3),  # LPS, axial
    np.diag([-1.0, -1.0, 1.0]),  # RAS-like, axial
    np.diag([-1.0, 1.0, 1.0]),  # left-right flipped (left-handed)
    np.diag([1.0, -1.0, -1.0]),  # slices stored top to bottom
    np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),  # coronal stack
    np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),  # rows/columns swapped
]


def _draw_grid(rng: np.random.Generator, size: str, pose: np.ndarray, centre: np.ndarray
               ) -> Grid:
    """Random spacing, storage orientation, gantry tilt and ROI position."""
    spec = SIZES[size]
    storage = _STORAGE[:4] if spec.get("axial") else _STORAGE  # scanners store axial slices
    direction = storage[int(rng.integers(len(storage)))]
    tilt = Rotation.from_euler("x", rng.uniform(-12, 12) if rng.random() < 0.4 else 0.0,
                               degrees=True).as_matrix()
    wobble = Rotation.from_rotvec(rng.normal(0, np.deg2rad(1.5), 3) * (rng.random() < 0.3))
    direction = wobble.as_matrix() @ tilt @ direction
    inplane, slice_ = rng.uniform(*spec["inplane"]), rng.uniform(*spec["slice"])
    spacing, shape = np.zeros(3), np.zeros(3, int)
    for a in range(3):
        patient_axis = int(np.argmax(np.abs(direction[:, a])))
        spacing[a] = slice_ if patient_axis == 2 else inplane
        n = spec["shape"][patient_axis]
        shape[a] = n + int(rng.integers(-4, 5)) if patient_axis < 2 else min(n, round(200 / slice_))
        if "slices" in spec:  # a scanner's matrix, and the slices to cover the head
            shape[a] = n if patient_axis < 2 else int(np.clip(
                round(rng.uniform(*spec["coverage_mm"]) / slice_), *spec["slices"]))
    spacing = np.round(spacing, 4)
    # ROI centred near the Circle of Willis, a little below it (siphon and basilar).
    roi = pose @ (np.array([0.0, 2.0, -6.0]) + rng.normal(0, 2.5, 3)) + centre
    if "slices" in spec:  # the whole head: centred in-plane, from just above the vertex
        length = spacing * (shape - 1)
        extent_z = float(np.abs(direction @ length)[2])
        top = 112.0 + rng.uniform(0.0, 6.0)
        roi = pose @ np.array([rng.normal(0, 3), 6.0 + rng.normal(0, 3), top - extent_z / 2]) + centre
    origin = roi - direction @ (spacing * (shape - 1) / 2.0)
    return Grid(tuple(int(s) for s in shape), tuple(float(s) for s in spacing),
                tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))


def _clot_points(tree: SampledTree, clots: list[dict]) -> np.ndarray:
    pts = []
    for c in clots:
        i = tree.index(c["segment"])
        sel = (tree.arc[i] >= c["start"]) & (tree.arc[i] <= c["end"])
        pts.append(tree.points[i][sel])
    return np.vstack(pts)


def _keep_in_view(grid: Grid, points: np.ndarray, margin: float) -> Grid:
    """Shift the ROI (whole voxels) so that the clot lies inside it with a margin."""
    idx = grid.physical_to_index(points)
    shift = np.zeros(3)
    for a in range(3):
        lo, hi = margin / grid.spacing[a], grid.shape[a] - 1 - margin / grid.spacing[a]
        need_lo, need_hi = idx[:, a].min() - lo, idx[:, a].max() - hi
        if need_lo < 0 and need_hi > 0:  # larger than the view: centre it
            shift[a] = (need_lo + need_hi) / 2
        elif need_lo < 0:
            shift[a] = need_lo
        elif need_hi > 0:
            shift[a] = need_hi
    shift = np.where(shift < 0, np.floor(shift), np.ceil(shift))
    origin = np.asarray(grid.origin) + grid.direction_matrix @ (np.asarray(grid.spacing) * shift)
    return Grid(grid.shape, grid.spacing, tuple(float(v) for v in origin), grid.direction)


def _draw_motion(rng: np.random.Generator, centre: np.ndarray) -> dict:
    """Rigid NCCT motion: rotation ≤ 3° about ``centre``, translation ≤ 2 mm."""
    axis = rng.normal(size=3)
    angle = rng.uniform(0.5, 3.0)
    rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(angle))
    t = rng.normal(size=3)
    t = t / np.linalg.norm(t) * rng.uniform(0.3, 2.0)
    r = rot.as_matrix()
    m = np.eye(4)  # CTA LPS point -> LPS point of the same anatomy in the NCCT scan
    m[:3, :3], m[:3, 3] = r, centre + t - r @ centre
    return {"angle_deg": float(angle), "rotation_deg": rot.as_euler("xyz", degrees=True).tolist(),
            "translation_mm": t.tolist(), "center_mm": centre.tolist(),
            "cta_to_ncct": m.tolist()}


# --- Rendering -------------------------------------------------------------------------


def render_case(plan: CasePlan, *, registered: bool = True,
                ncct_thickness_mm: float | None = None) -> SynthCase:
    """Sample a plan on its grids: CTA, NCCT (aligned or moved), mask, labels, truth.

    ``ncct_thickness_mm`` (default: the plan's own, drawn for the ``clinical`` size) puts
    the NCCT on its own grid of thick slices, each the mean of thin sub-slices as a
    scanner reconstructs them: the CTA's grid (``registered``) or the moved NCCT grid.
    """
    grid, img = plan.grid, plan.imaging
    thickness = img.get("ncct_thickness_mm") if ncct_thickness_mm is None else ncct_thickness_mm
    seeds = img["noise_seeds"]
    cta, ncct, clot_occ, labels = _render_on(plan, grid, np.eye(4), img["streaks"][:2])
    sigma = _noise_sigma(grid)
    # At clinical size only the full-resolution box around the vessel tree has detail
    # finer than the scanner's blur; the rest is interpolated from a 2 mm render.
    detail = (large.detail_box(grid, _tree_points(plan, np.eye(4)))
              if large.is_large(grid) else None)
    cta = _finish(cta, grid, img["psf_mm"], sigma * img["noise_scale"][0], seeds[0],
                  blur_box=detail)
    mask = (clot_occ >= 0.5) & (labels != LABELS["calcification"])
    del clot_occ
    if thickness is None:
        ncct = _finish(ncct, grid, img["psf_mm"], sigma * img["noise_scale"][1], seeds[1])
        ncct_vol = Volume.on_grid(ncct, grid)
    else:  # the thin NCCT on the CTA grid is only needed for the truth, at the clot
        ncct = _finish_near(ncct, mask, grid, img["psf_mm"], sigma * img["noise_scale"][1],
                            seeds[1])
    truth = _truth(plan, cta, ncct, mask, sigma)
    del ncct
    if not registered or thickness is not None:
        g = plan.ncct_grid if not registered else grid
        to_cta = np.linalg.inv(np.asarray(plan.motion["cta_to_ncct"])) if not registered \
            else np.eye(4)
        streaks = [img["streaks"][2]] * 2 if not registered else img["streaks"][:2]
        seed = seeds[2] if not registered else seeds[1]
        if thickness is not None:
            g = large.thick_grid(g, float(thickness))
            thin, k = large.subslice_grid(g)
            _, moved, _, _ = _render_on(plan, thin, to_cta, streaks, ncct_only=True, k=k)
        else:
            _, moved, _, _ = _render(plan, g, to_cta, streaks, ncct_only=True)
        ncct_vol = Volume.on_grid(_finish(moved, g, img["psf_mm"],
                                          _noise_sigma(g) * img["noise_scale"][1], seed,
                                          slab_averaged=thickness is not None), g)
        if not registered:
            truth["ncct_motion"] = plan.motion
    # Every case records its NCCT's slice thickness (truth.csv ``ncct_thickness_mm``).
    truth["ncct_thickness_mm"] = float(ncct_vol.grid.spacing[ncct_vol.grid.axial_axis()])
    truth["registered"] = registered
    return SynthCase(Volume.on_grid(cta, grid), ncct_vol,
                     Volume.on_grid(mask.astype(np.uint8), grid), truth,
                     Volume.on_grid(labels, grid))


def _render_on(plan: CasePlan, grid: Grid, to_cta: np.ndarray, streaks: list[dict],
               ncct_only: bool = False, k: int = 1):
    """:func:`_render`, or for grids of clinical size a coarse render plus full resolution
    around the vessel tree (:mod:`clotseg.synth.large`). ``k > 1``: ``grid`` holds thin
    sub-slices and the NCCT returned is the mean of every ``k`` (thick slices)."""
    if not large.is_large(grid):
        out = _render(plan, grid, to_cta, streaks, ncct_only)
        if k == 1:
            return out
        return out[0], large.slab_average(out[1], grid.axial_axis(), k), out[2], out[3]
    points = _tree_points(plan, to_cta)
    return large.render_large(lambda g: _render(plan, g, to_cta, streaks, ncct_only), grid,
                              points, ncct_only, k)


def _tree_points(plan: CasePlan, to_cta: np.ndarray) -> np.ndarray:
    """The vessel tree's centreline points (LPS mm) in the frame of a grid whose points
    ``to_cta`` maps to the CTA's."""
    tree = np.vstack(plan.tree.points) @ plan.pose.T + plan.centre  # CTA LPS
    inv = np.linalg.inv(to_cta)
    return tree @ inv[:3, :3].T + inv[:3, 3]


def _finish_near(hu: np.ndarray, mask: np.ndarray, grid: Grid, psf_mm: float, sigma: float,
                 seed) -> np.ndarray:
    """``hu`` with :func:`_finish` applied around ``mask`` only (what the truth reads)."""
    if not mask.any():
        return hu
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 8, 0)
    hi = np.minimum(idx.max(0) + 9, grid.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    hu[box] = _finish(hu[box], large.sub_grid(grid, lo, hi), psf_mm, sigma, seed)
    return hu


def _noise_sigma(grid: Grid) -> float:
    """σ ≈ 4 HU at 5 mm slices, ∝ 1/√thickness, ≈ 11–12 HU at 0.6 mm (Nakamura 2019)."""
    return 4.0 * float(np.sqrt(5.0 / grid.spacing[grid.axial_axis()]))


def _sampler(plan: CasePlan, grid: Grid, to_cta: np.ndarray) -> anatomy.Sampler:
    """Anatomy-frame coordinates of the voxel centres of ``grid``; ``to_cta`` maps the
    grid's LPS points to the CTA's LPS frame (identity for the CTA itself)."""
    full = to_cta @ grid.affine  # index -> CTA LPS
    return anatomy.Sampler(grid.shape, plan.pose.T @ full[:3, :3],
                           plan.pose.T @ (full[:3, 3] - plan.centre))


def _render(plan: CasePlan, grid: Grid, to_cta: np.ndarray, streaks: list[dict],
            ncct_only: bool = False):
    """Noise-free CTA and NCCT HU, clot occupancy and labels on ``grid``."""
    smp = _sampler(plan, grid, to_cta)
    pv = float(min(grid.spacing))  # partial-volume width: one in-plane voxel
    t = anatomy.tissue_fields(smp, plan.head, pv)
    ncct = t["ncct"]
    img, flow = plan.imaging, plan.flow
    cav = anatomy.cavernous_fraction(smp, pv) * (1 - t["bone"])
    ncct = ncct * (1 - cav) + flow["blood"] * cav
    cta = ncct + img["cta_brain_enh"] * t["brain"] + img["pituitary_hu"] * t["pituitary"] + (
        img["cavernous_hu"] * flow["bolus"] * cav)
    occ, v_cta, v_ncct, v_lab, csf = _vessels(plan, smp, pv, t["brain"])
    ncct = ncct * (1 - csf) + plan.head.csf * csf
    cta = cta * (1 - csf) + plan.head.csf * csf
    ncct = ncct * (1 - occ) + v_ncct * occ
    cta = cta * (1 - occ) + v_cta * occ
    clot_occ = np.where(v_lab == LABELS["clot"], occ, 0.0).astype(np.float32)
    labels = np.where(occ >= 0.5, v_lab, 0).astype(np.uint8)
    labels[(labels == 0) & (t["bone"] >= 0.5)] = LABELS["bone"]
    for p in plan.plaques:  # calcified plaques: bright in both modalities
        sl = smp.box(np.stack([p["a"], p["b"]]), p["radius"] + pv)
        if sl is None:
            continue
        frac = anatomy._frac(anatomy._capsule_sd(*smp.coords(sl), p["a"], p["b"], p["radius"]),
                             pv).astype(np.float32)
        ncct[sl] = ncct[sl] * (1 - frac) + p["hu"] * frac
        cta[sl] = cta[sl] * (1 - frac) + p["hu"] * frac
        labels[sl][frac >= 0.5] = LABELS["calcification"]
    bone_free = 1.0 - t["bone"]
    _add_streaks(ncct, plan, grid, to_cta, streaks[1], bone_free)
    if not ncct_only:
        _add_streaks(cta, plan, grid, to_cta, streaks[0], bone_free)
    return cta, ncct, clot_occ, labels


def _vessels(plan: CasePlan, smp: anatomy.Sampler, pv: float, brain: np.ndarray):
    """Vessel occupancy and values, computed only in each segment's bounding box.

    Hand-written because no library renders tubes with per-sample values: for every voxel
    near a segment, the nearest centreline sample (k-d tree) gives the distance to the
    axis, the local radius and the sample's CTA/NCCT value and label.
    """
    shape = smp.shape
    occ = np.zeros(shape, np.float32)
    v_cta, v_ncct = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    v_lab = np.zeros(shape, np.uint8)
    csf = np.zeros(shape, np.float32)
    tree = plan.tree
    for i in range(len(tree.segments)):
        sleeve = float(plan.sleeves[i])
        reach = float(tree.radius[i].max()) + sleeve + pv
        sl = smp.box(tree.points[i], reach)
        if sl is None:
            continue
        q = np.stack([c.ravel() for c in smp.coords(sl)], axis=1)
        d, nn = cKDTree(tree.points[i]).query(q, distance_upper_bound=reach)
        hit = np.isfinite(d)
        nn = np.where(hit, nn, 0)
        r = tree.radius[i][nn]
        box_shape = [s.stop - s.start for s in sl]
        o = np.where(hit, np.clip(0.5 - (d - r) / pv, 0, 1), 0).astype(np.float32)
        o = o.reshape(box_shape)
        if sleeve:
            c = np.where(hit, 0.8 * np.clip(0.5 - (d - r - sleeve) / pv, 0, 1), 0)
            np.maximum(csf[sl], (c.reshape(box_shape) * brain[sl]).astype(np.float32),
                       out=csf[sl])
        better = o > occ[sl]
        vals = plan.values[i]
        for dst, src in ((v_cta, vals["cta"]), (v_ncct, vals["ncct"]), (v_lab, vals["label"])):
            np.copyto(dst[sl], src[nn].reshape(box_shape), where=better)
        np.maximum(occ[sl], o, out=occ[sl])
    return occ, v_cta, v_ncct, v_lab, csf


def _add_streaks(out: np.ndarray, plan: CasePlan, grid: Grid, to_cta: np.ndarray, s: dict,
                 weight: np.ndarray) -> None:
    """Beam hardening in the scan's own transverse plane (LPS x-y of the grid): radial
    streaks around dense bone and a dark band between the petrous ridges."""
    grid_from_cta = np.linalg.inv(to_cta)
    src = (grid_from_cta[:3, :3] @ (plan.pose @ anatomy.STREAK_SOURCES.T + plan.centre[:, None])
           + grid_from_cta[:3, 3:]).T

    def field(px, py, pz):
        val = np.zeros(px.shape, np.float32)
        for k, c in enumerate(src):
            dx, dy = px - np.float32(c[0]), py - np.float32(c[1])
            val += (s["amp"] * np.exp(-((pz - np.float32(c[2])) / np.float32(8.0)) ** 2)
                    * np.cos(s["lobes"][k] * np.arctan2(dy, dx) + s["phase"][k])
                    * np.exp(-np.sqrt(dx * dx + dy * dy) / np.float32(20.0)))
        a, b = src[0], src[1]
        ab = b[:2] - a[:2]
        tt = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / (ab @ ab), 0, 1)
        dist2 = (px - a[0] - tt * ab[0]) ** 2 + (py - a[1] - tt * ab[1]) ** 2
        val -= s["bar"] * np.exp(-dist2 / 9.0) * np.exp(-((pz - (a[2] + b[2]) / 2) / 6.0) ** 2)
        return val

    phys = anatomy.Sampler(grid.shape, grid.affine[:3, :3], grid.affine[:3, 3])  # index -> LPS
    out += phys.smooth(field) * weight


def _finish(hu: np.ndarray, grid: Grid, psf_mm: float, sigma: float, seed,
            slab_averaged: bool = False, blur_box=None) -> np.ndarray:
    """Scanner blur (PSF plus slice profile), correlated noise, integer HU.
    ``slab_averaged``: the slice profile is already in ``hu`` (thick slices made from
    sub-slices), only the PSF remains. ``blur_box`` (index ``(start, stop)``): blur only
    there, where a large grid was rendered at full resolution; elsewhere ``hu`` is
    linearly interpolated from a 2 mm render, which a sub-millimetre blur leaves as it is
    (:mod:`clotseg.synth.large`)."""
    sp = np.asarray(grid.spacing)
    ax = grid.axial_axis()
    inplane = float(min(sp))
    blur_mm = np.full(3, psf_mm)
    # The slice profile: a box of the slice thickness (σ = t/√12) beyond what the
    # partial-volume edges (one in-plane voxel) already account for.
    if not slab_averaged:
        blur_mm[ax] = np.sqrt(psf_mm**2 + max(sp[ax] ** 2 - inplane**2, 0.0) / 12.0)
    if blur_box is None:
        out = ndimage.gaussian_filter(hu.astype(np.float32, copy=False), blur_mm / sp,
                                      truncate=3.0)
    else:
        out = hu.astype(np.float32, copy=False)
        start, stop = (np.asarray(b, int) for b in blur_box)
        reach = np.ceil(3.0 * blur_mm / sp).astype(int) + 1  # the kernel's radius
        lo, hi = np.maximum(start - reach, 0), np.minimum(stop + reach, out.shape)
        outer = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        inner = tuple(slice(int(a - c), int(b - c)) for a, b, c in zip(start, stop, lo))
        blurred = ndimage.gaussian_filter(out[outer], blur_mm / sp, truncate=3.0)
        out[tuple(slice(int(a), int(b)) for a, b in zip(start, stop))] = blurred[inner]
        del blurred
    out += _correlated_noise(grid.shape, ax, sigma, seed)
    np.round(out, out=out)
    np.clip(out, -1024, 3071, out=out)
    return out.astype(np.int16)  # scanners store integer HU


def _correlated_noise(shape, axial: int, sigma: float, seed) -> np.ndarray:
    """Gaussian noise with an in-plane correlation of ≈ 1 voxel (CT noise texture),
    scaled so that its standard deviation is ``sigma``."""
    rng = np.random.default_rng(int(seed))
    white = rng.standard_normal(shape, dtype=np.float32)
    s = np.full(3, 0.6)
    s[axial] = 0.0
    kernel = ndimage.gaussian_filter1d(np.eye(1, 15, 7).ravel(), 0.6, truncate=3.0)
    gain = float(np.sqrt((kernel**2).sum())) ** 2  # two in-plane axes
    return ndimage.gaussian_filter(white, s, truncate=3.0) * np.float32(sigma / gain)


def _truth(plan: CasePlan, cta, ncct, mask, sigma: float) -> dict:
    """Ground truth measured on the generated arrays (volume, HU) and from the drawing."""
    grid = plan.grid
    n = int(mask.sum())
    has = bool(plan.clots) and n > 0
    first = plan.clots[0] if has else {}
    nan = float("nan")
    cta_mean = float(cta[mask].mean()) if has else nan
    ncct_mean = float(ncct[mask].mean()) if has else nan
    return {
        "has_clot": has,
        "location": first.get("location", "none"),
        "segment": first.get("segment", ""),
        "n_fragments": len(plan.clots) if has else 0,
        "faint": bool(first.get("faint", False)),
        "volume_mm3": n * grid.voxel_volume,  # voxel count × voxel volume
        "length_mm": float(sum(c["end"] - c["start"] for c in plan.clots)) if has else 0.0,
        "ncct_mean_hu": ncct_mean,
        "cta_mean_hu": cta_mean,
        "perviousness_hu": cta_mean - ncct_mean,
        "drawn_ncct_hu": first.get("ncct_hu", nan),
        "drawn_delta_hu": first.get("delta_hu", nan),
        "spacing": grid.spacing,
        "spacing_x": grid.spacing[0], "spacing_y": grid.spacing[1], "spacing_z": grid.spacing[2],
        "shape": grid.shape,
        "size": plan.size,
        "slice_thickness_mm": grid.spacing[grid.axial_axis()],
        "noise_sigma_hu": sigma,
        "lumen_bolus": plan.flow["bolus"],
        "blood_hu": plan.flow["blood"],
        "n_calcifications": len(plan.plaques),
        "n_slow_flow": len(plan.gaps),
        "anatomy": plan.variant,
        "ncct_motion": None,
        "seed": plan.seed,
    }
