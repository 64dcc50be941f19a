"""Writing a synthetic cohort in the case-folder layout, with ``truth.csv``.

``OUT/<case_id>/cta.nii.gz``, ``ncct.nii.gz``, ``clot.nii.gz`` (uint8 mask on the CTA grid)
and, for unregistered cohorts, ``motion.json`` (the NCCT's true rigid motion). Case ``k``
depends only on ``(seed, k)``, so cohorts of different sizes share their first cases.

Thick-slice NCCT: in the clinic the NCCT is often reconstructed at 5 mm (sometimes
2.5 mm) slices while the CTA has sub-millimetre slices. A share of the cases
(``thick_ncct``) gets such an NCCT, slab-averaged on its own grid
(:func:`clotseg.synth.phantom.render_case`); ``truth.csv`` records every case's NCCT
slice thickness (``ncct_thickness_mm``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from clotseg.io.atomic import write_text
from clotseg.io.readers import write_volume
from clotseg.synth.phantom import SIZES, SynthCase, case_seed, make_case

#: Columns of ``truth.csv`` (one row per case).
TRUTH_COLUMNS = ["case_id", "has_clot", "location", "segment", "n_fragments", "faint",
                 "volume_mm3", "length_mm", "ncct_mean_hu", "cta_mean_hu", "perviousness_hu",
                 "spacing_x", "spacing_y", "spacing_z", "size", "registered", "seed",
                 "shift", "ncct_thickness_mm"]

#: Thick NCCT reconstructions and how often each is chosen when a case gets one: 5 mm is
#: the usual clinical NCCT, 2.5 mm the less common one (an assumed 70 / 30 split).
THICK_NCCT_MM = (2.5, 5.0)
THICK_NCCT_P = (0.3, 0.7)


def case_id(index: int) -> str:
    """Folder name of case ``index`` (``synth_000``, ``synth_001``, ...)."""
    return f"synth_{index:03d}"


def ncct_thickness_for(seed: int, share: float) -> float | None:
    """NCCT slice thickness (mm) of the case with ``seed`` when a ``share`` of the cohort
    has thick-slice NCCTs, or None (NCCT at the CTA's resolution).

    Drawn from the case's own stream, apart from the phantom's, so the patient and the
    CTA stay those of the thin-slice case; the cases thick at one share are also thick at
    any larger share (one uniform draw against the share).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7C1D]))
    u, which = rng.random(2)
    thickness = THICK_NCCT_MM[0] if which < THICK_NCCT_P[0] else THICK_NCCT_MM[1]
    return thickness if u < share else None


def check_thick_ncct(share: float | None, size: str) -> None:
    """Refuse a thick-NCCT share outside 0..1, or any share for the ``clinical`` size
    (whose NCCT is always 2.5–5 mm, :data:`clotseg.synth.phantom.SIZES`)."""
    if share is None:
        return
    if not 0.0 <= share <= 1.0:  # also refuses NaN
        raise ValueError(f"the thick-NCCT share must be between 0 and 1 (got {share})")
    if "ncct_thickness_mm" in SIZES.get(size, {}):
        raise ValueError(f"--size {size} always has a thick (2.5-5 mm) NCCT; the thick-NCCT "
                         "share is for the other sizes")


def cohort_case(seed: int, index: int, size: str = "small", shift: str = "standard",
                thick_share: float = 0.0, registered: bool = True) -> tuple[int, SynthCase]:
    """Case ``index`` of the cohort ``seed`` exactly as :func:`write_cohort` makes it
    (its seed, thick-NCCT draw and shift), with its label map, in memory; returns the
    case's seed and the case. For analyses that need what is never written to disk."""
    from clotseg.synth.shift import SHIFTS, make_shifted_case

    s = case_seed(seed, index)
    thickness = ncct_thickness_for(s, thick_share)
    if shift == "standard":
        return s, make_case(s, size, registered=registered, ncct_thickness_mm=thickness)
    return s, make_shifted_case(s, size, SHIFTS[shift], ncct_thickness_mm=thickness)


def write_cohort(out: str | Path, cases: int, seed: int = 0, size: str = "small",
                 registered: bool = True, progress: bool = True, *,
                 shift: str = "standard", suffix: str = ".nii.gz",
                 thick_ncct: float | None = None) -> Path:
    """Write ``cases`` phantoms under ``out`` and return the path of ``truth.csv``.

    ``shift`` names imaging settings of :mod:`clotseg.synth.shift` (``shifted``: another
    scanner and protocol, for generalisation tests; registered pairs only); ``suffix`` is
    the file format (``.nii.gz``, ``.nrrd``, ...). ``thick_ncct`` is the share of cases
    (0..1) whose NCCT is reconstructed at 2.5 or 5 mm slices on its own grid; None takes
    the shift's default (standard 0: the training cohort stays as it always was; shifted
    0.3). Every file is written atomically; ``truth.csv`` is written last, so its presence
    means the cohort is complete.
    """
    from clotseg.synth.shift import SHIFTS

    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose from {', '.join(SHIFTS)}")
    if shift != "standard" and not registered:
        raise ValueError("shifted cohorts are written as registered pairs")
    if cases < 1:
        raise ValueError("cases must be at least 1")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    check_thick_ncct(thick_ncct, size)
    share = SHIFTS[shift].thick_ncct_share if thick_ncct is None else float(thick_ncct)
    if "ncct_thickness_mm" in SIZES[size]:
        share = 0.0  # the plan draws its own thick NCCT
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(cases)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="case")
    rows = []
    for k in indices:
        s, case = cohort_case(seed, k, size, shift, share, registered)
        folder = out / case_id(k)
        write_volume(case.cta, folder / f"cta{suffix}")
        write_volume(case.ncct, folder / f"ncct{suffix}")
        write_volume(case.clot, folder / f"clot{suffix}", mask=True)
        if not registered:
            write_text(folder / "motion.json", json.dumps(case.truth["ncct_motion"], indent=1))
        rows.append({**case.truth, "case_id": case_id(k), "seed": s, "shift": shift})
    return write_text(out / "truth.csv", truth_csv(rows))


def truth_csv(rows: list[dict]) -> str:
    """CSV text of truth rows (floats with 4 decimals, NaN as empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, TRUTH_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in TRUTH_COLUMNS})
    return buf.getvalue()


def _fmt(value):
    if isinstance(value, float):
        return "" if value != value else f"{value:.4f}"
    return value
