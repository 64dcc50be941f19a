"""Writing a synthetic cohort in the case-folder layout plus ``truth.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from clotseg.io.atomic import write_text
from clotseg.io.readers import write_volume
from clotseg.synth.phantom import case_seed, make_case

TRUTH_COLUMNS = ["case_id", "has_clot", "location", "segment", "n_fragments", "faint",
                 "volume_mm3", "length_mm", "ncct_mean_hu", "cta_mean_hu", "perviousness_hu",
                 "spacing_x", "spacing_y", "spacing_z", "size", "seed"]


def case_id(index: int) -> str:
    return f"synth_{index:03d}"


def write_cohort(out: str | Path, cases: int, seed: int = 0, size: str = "small",
                 registered: bool = True, progress: bool = True) -> Path:
    """Write ``cases`` phantoms to ``out/<case>/{cta,ncct,clot}.nii.gz`` and ``truth.csv``.

    Case ``k`` depends only on ``(seed, k)``, so cohorts of different sizes share cases.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    it = range(cases)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth", unit="case")
    for k in it:
        cs = case_seed(seed, k)
        case = make_case(cs, size, registered=registered)
        cid = case_id(k)
        write_volume(case.cta, out / cid / "cta.nii.gz")
        write_volume(case.ncct, out / cid / "ncct.nii.gz")
        write_volume(case.clot, out / cid / "clot.nii.gz", mask=True)
        rows.append({"case_id": cid, **{c: case.truth.get(c) for c in TRUTH_COLUMNS[1:-1]},
                     "seed": cs})
        if not registered:
            import json

            write_text(out / cid / "motion.json", json.dumps(case.truth["ncct_motion"]))
    buf = io.StringIO()
    w = csv.DictWriter(buf, TRUTH_COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return write_text(out / "truth.csv", buf.getvalue())
