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
  roll the flip cannot undo;
* with ``--auto-roi``, ``auto_roi_mm``: the distance from the plane of the centre that
  the automatic ROI (:func:`clotseg.preprocess.roi.find_circle_of_willis`) finds in the
  CTA, whose left-right position is the head's estimated mirror plane: how well a flip
  about a plane found in the image could do.

    python benchmarks/midline_offset.py --work /tmp/qw3 --cohorts train same shifted --auto-roi

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


def case_geometry(cta_file: Path, seed: int, size: str, has_clot: bool,
                  auto_roi: bool = False) -> dict:
    """``offset_mm`` and ``tilt_deg`` (and ``auto_roi_mm``) of one written case (see
    module docstring)."""
    from clotseg.io.ongrid import file_grid
    from clotseg.synth import phantom

    plan = phantom.plan_case(seed, size, clot=has_clot)
    grid = file_grid(cta_file)
    d = grid.direction_matrix
    centre = np.asarray(grid.origin) + d @ (np.asarray(grid.spacing) * (np.asarray(grid.shape) - 1) / 2)
    normal = plan.pose[:, 0]  # the anatomy's left-right axis in patient (LPS) space
    axis = int(np.argmax(np.abs(d[0, :])))  # array axis nearest the patient's x axis
    cos = min(1.0, abs(float(normal @ d[:, axis])))
    out = {"offset_mm": abs(float(normal @ (centre - plan.centre))),
           "tilt_deg": float(np.degrees(np.arccos(cos)))}
    if auto_roi:
        import warnings

        from clotseg.io.readers import read_volume
        from clotseg.preprocess.roi import find_circle_of_willis

        with warnings.catch_warnings():  # a fallback to the head's centre is measured too
            warnings.simplefilter("ignore")
            found = np.asarray(find_circle_of_willis(read_volume(cta_file)), dtype=float)
        out["auto_roi_mm"] = abs(float(normal @ (found - plan.centre)))
    return out


def cohort_geometry(folder: Path, auto_roi: bool = False) -> dict:
    """Per case and summarised (median, 90th percentile, maximum) for one cohort folder."""
    with open(folder / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cases = {}
    for r in rows:
        cta = next(iter(sorted((folder / r["case_id"]).glob("cta.*"))))
        cases[r["case_id"]] = case_geometry(cta, int(r["seed"]), r["size"],
                                            r["has_clot"] == "True", auto_roi)
    summary = {}
    for key in ("offset_mm", "tilt_deg", "auto_roi_mm")[:3 if auto_roi else 2]:
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
    p.add_argument("--auto-roi", action="store_true",
                   help="also the automatic ROI's centre's distance from the midline")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    data = Path(args.work) / "data"
    result = {"benchmark": "midline_offset", "cohorts": {}}
    for name in args.cohorts:
        folders = sorted(f for f in data.glob(f"{name}_*") if (f / "truth.csv").is_file())
        if not folders:
            raise SystemExit(f"no {name} cohort under {data} (run quality.py first)")
        result["cohorts"][name] = cohort_geometry(folders[0], args.auto_roi)
    emit(result, args.out)


if __name__ == "__main__":
    main()
