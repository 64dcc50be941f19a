"""Writing a synthetic cohort in the case-folder layout, with ``truth.csv``.

``OUT/<case_id>/cta.nii.gz``, ``ncct.nii.gz``, ``clot.nii.gz`` (uint8 mask on the CTA grid)
and, for unregistered cohorts, ``motion.json`` (the NCCT's true rigid motion). Case ``k``
depends only on ``(seed, k)``, so cohorts of different sizes share their first cases.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from clotseg.io.atomic import write_text
from clotseg.io.readers import write_volume
from clotseg.synth.phantom import SIZES, case_seed, make_case

#: Columns of ``truth.csv`` (one row per case).
TRUTH_COLUMNS = ["case_id", "has_clot", "location", "segment", "n_fragments", "faint",
                 "volume_mm3", "length_mm", "ncct_mean_hu", "cta_mean_hu", "perviousness_hu",
                 "spacing_x", "spacing_y", "spacing_z", "size", "registered", "seed",
                 "shift"]


def case_id(index: int) -> str:
    """Folder name of case ``index`` (``synth_000``, ``synth_001``, ...)."""
    return f"synth_{index:03d}"


def write_cohort(out: str | Path, cases: int, seed: int = 0, size: str = "small",
                 registered: bool = True, progress: bool = True, *,
                 shift: str = "standard", suffix: str = ".nii.gz") -> Path:
    """Write ``cases`` phantoms under ``out`` and return the path of ``truth.csv``.

    ``shift`` names imaging settings of :mod:`clotseg.synth.shift` (``shifted``: another
    scanner and protocol, for generalisation tests; registered pairs only); ``suffix`` is
    the file format (``.nii.gz``, ``.nrrd``, ...). Every file is written atomically;
    ``truth.csv`` is written last, so its presence means the cohort is complete.
    """
    from clotseg.synth.shift import SHIFTS, make_shifted_case

    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose from {', '.join(SHIFTS)}")
    if shift != "standard" and not registered:
        raise ValueError("shifted cohorts are written as registered pairs")
    if cases < 1:
        raise ValueError("cases must be at least 1")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(cases)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="case")
    rows = []
    for k in indices:
        s = case_seed(seed, k)
        if shift == "standard":
            case = make_case(s, size, registered=registered)
        else:
            case = make_shifted_case(s, size, SHIFTS[shift])
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
