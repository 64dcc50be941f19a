"""How far the phantom's volumes lie from the head's midline, per cohort.

``model.mirror`` hands the network each slice beside its left-right mirror about the
slice's centre, which is the other hemisphere's mirror point only when the volume is
centred on the head's mid-sagittal plane and not turned about it. This benchmark reads,
for every case of a ``quality.py`` cohort, the CTA's grid from its file header and the
anatomy's pose from the phantom's plan (rebuilt from the seed in ``truth.csv``; the
label map and pose are never written to disk), and reports:

* ``offset_mm``: the distance of the volume's centre from the mid-sagittal plane;
* ``tilt_deg``: the angle between the plane's normal and the array axis that
  ``clotseg`` takes as left-right (the one nearest the patient's x axis), the yaw and
  roll the flip cannot undo.

    python benchmarks/midline_offset.py --work /tmp/qw3 --cohorts train same shifted

Hand-written: the phantom's pose is its own; the steps are two dot products per case.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402


def case_geometry(cta_file: Path, seed: int, size: str, has_clot: bool) -> dict:
    """``offset_mm`` and ``tilt_deg`` of one written case (see module docstring)."""
    from clotseg.io.ongrid import file_grid
    from clotseg.synth import phantom

    plan = phantom.plan_case(seed, size, clot=has_clot)
    grid = file_grid(cta_file)
    d = grid.direction_matrix
    centre = np.asarray(grid.origin) + d @ (np.asarray(grid.spacing) * (np.asarray(grid.shape) - 1) / 2)
    normal = plan.pose[:, 0]  # the anatomy's left-right axis in patient (LPS) space
    axis = int(np.argmax(np.abs(d[0, :])))  # array axis nearest the patient's x axis
    cos = min(1.0, abs(float(normal @ d[:, axis])))
    return {"offset_mm": abs(float(normal @ (centre - plan.centre))),
            "tilt_deg": float(np.degrees(np.arccos(cos)))}


def cohort_geometry(folder: Path) -> dict:
    """Per case and summarised (median, 90th percentile, maximum) for one cohort folder."""
    with open(folder / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cases = {}
    for r in rows:
        cta = next(iter(sorted((folder / r["case_id"]).glob("cta.*"))))
        cases[r["case_id"]] = case_geometry(cta, int(r["seed"]), r["size"],
                                            r["has_clot"] == "True")
    summary = {}
    for key in ("offset_mm", "tilt_deg"):
        v = np.array([c[key] for c in cases.values()])
        summary[key] = {"median": round(float(np.median(v)), 2),
                        "p90": round(float(np.percentile(v, 90)), 2),
                        "max": round(float(v.max()), 2)}
    return {"folder": str(folder), "n_cases": len(cases), **summary,
            "cases": {k: {n: round(x, 3) for n, x in c.items()} for k, c in cases.items()}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="quality.py's working folder")
    p.add_argument("--cohorts", nargs="+", default=["train", "same", "shifted"])
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    data = Path(args.work) / "data"
    result = {"benchmark": "midline_offset", "cohorts": {}}
    for name in args.cohorts:
        folders = sorted(f for f in data.glob(f"{name}_*") if (f / "truth.csv").is_file())
        if not folders:
            raise SystemExit(f"no {name} cohort under {data} (run quality.py first)")
        result["cohorts"][name] = cohort_geometry(folders[0])
    emit(result, args.out)


if __name__ == "__main__":
    main()
