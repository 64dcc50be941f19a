"""How visible each test clot is, and whether visibility explains the clots runs missed.

``quality.py`` counts missed clots; this benchmark asks whether a missed clot could have
been seen at all. It regenerates a test cohort of ``quality.py`` in memory (same seeds,
same shift, same thick-NCCT draws, with the phantom's label map, which is never written to
disk) and measures, per clot, on the images as written:

* CTA contrast: mean HU of the opacified lumen within 8 mm of the clot minus the clot's
  mean HU (the filling defect), in units of the CTA's local spread (standard deviation of
  the soft tissue 3–8 mm around the clot): ``cnr_cta``;
* NCCT contrast: the clot's mean HU minus that of the blood around it (the hyperdense
  vessel sign), on the NCCT resampled onto the CTA grid as ``predict`` does, over the
  same local spread of the NCCT: ``cnr_ncct``;
* ``cnr_both``: the two combined as independent measurements (root sum of squares);
* the clot's mean HU minus the median of the tissue around it, per scan: what a clot
  that fills the vessel's whole cross-section is seen against on that slice;
* the clot's voxel count on the CTA grid and its slice count along the scan axis.

Given the per-patient tables of earlier ``quality.py`` results (``--results``), it then
reports for each run the share of clots found per third of ``cnr_both`` and the AUC with
which ``cnr_both`` alone separates found from missed clots (0.5: visibility explains
nothing; 1: every missed clot is less visible than every found one); with several runs,
also the clots every run missed against those every run found (``across_runs``). The training-site
cohort (``--cohort same``) gives the reference spread of visibility.

    python benchmarks/detectability.py --cohort shifted --results benchmarks/results/quality_30min_bf16_90patients.json
    python benchmarks/detectability.py --cohort same --cases 30

Hand-written measurement: no library computes a lesion's contrast-to-noise from a label
map; the steps are a distance transform and masked means (scipy / numpy).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)
from quality import COHORTS

NEAR_MM = 8.0  # lumen and tissue counted around the clot up to this distance
TISSUE_FROM_MM = 3.0  # tissue closer than this to the clot is partial-volume vessel


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohort", default="shifted", choices=[c for c in COHORTS if c != "train"])
    p.add_argument("--cases", type=int, default=90, help="patients (quality.py --test-cases)")
    p.add_argument("--results", nargs="*", default=[],
                   help="quality.py JSON files whose per-patient detection to explain")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p.parse_args(argv)


def clot_visibility(case) -> dict:
    """Contrast-to-noise of one phantom case's clot in each scan (module docstring)."""
    from scipy import ndimage

    from clotseg.preprocess.resample import resample_to_grid
    from clotseg.synth.phantom import LABELS

    clot = np.asarray(case.clot.array) > 0
    labels = np.asarray(case.labels.array)
    grid = case.cta.grid
    dist = ndimage.distance_transform_edt(~clot, sampling=grid.spacing)
    near = dist <= NEAR_MM
    lumen = near & (labels == LABELS["lumen"]) & ~clot
    tissue = near & (dist >= TISSUE_FROM_MM) & (labels == LABELS["background"])
    cta = np.asarray(case.cta.array, dtype=np.float64)
    ncct_vol = case.ncct if case.ncct.grid.same_as(grid) else resample_to_grid(case.ncct, grid)
    ncct = np.asarray(ncct_vol.array, dtype=np.float64)
    out = {"clot_voxels": int(clot.sum()),
           "clot_slices": int(np.any(clot, axis=tuple(a for a in range(3)
                                                       if a != grid.axial_axis())).sum()),
           "lumen_voxels": int(lumen.sum()), "tissue_voxels": int(tissue.sum())}
    for name, arr, sign in (("cta", cta, -1.0), ("ncct", ncct, 1.0)):
        contrast = sign * (arr[clot].mean() - arr[lumen].mean()) if lumen.any() else math.nan
        spread = _robust_sd(arr[tissue]) if tissue.sum() > 10 else math.nan
        out[f"{name}_contrast_hu"] = round(float(contrast), 2)
        # the clot against the tissue around the vessel: what a clot that fills the whole
        # vessel cross-section on a slice is seen against there
        out[f"{name}_clot_minus_tissue_hu"] = round(
            float(arr[clot].mean() - np.median(arr[tissue])), 2) if tissue.any() else math.nan
        out[f"{name}_spread_hu"] = round(float(spread), 2)
        out[f"cnr_{name}"] = round(float(contrast / spread), 3) if spread > 0 else math.nan
    both = [max(out["cnr_cta"], 0.0), max(out["cnr_ncct"], 0.0)]  # a reversed sign is no help
    out["cnr_both"] = round(math.hypot(*both), 3) if all(map(math.isfinite, both)) else math.nan
    return out


def _robust_sd(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the noise and texture of the tissue, not the
    few bright voxels of a bone edge or an enhancing sinus that lie in the same shell."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def cohort_visibility(cohort: str, cases: int) -> dict[str, dict]:
    """Per case id: truth fields and, for a clot case, :func:`clot_visibility`."""
    from tqdm import tqdm

    from clotseg.synth.cohort import case_id, cohort_case, ncct_thickness_for
    from clotseg.synth.shift import SHIFTS

    seed, shift, _ = COHORTS[cohort]
    share = SHIFTS[shift].thick_ncct_share
    rows = {}
    for k in tqdm(range(cases), desc=f"{cohort} cohort", unit="case"):
        s, case = cohort_case(seed, k, "small", shift, share)  # as `clotseg synth` writes it
        thickness = ncct_thickness_for(s, share)
        t = case.truth
        row = {"has_clot": bool(t["has_clot"]), "location": t.get("location", ""),
               "faint": bool(t.get("faint", False)), "ncct_thickness_mm": thickness,
               "length_mm": round(float(t.get("length_mm", 0.0)), 2)}
        if row["has_clot"]:
            row.update(clot_visibility(case))
        rows[case_id(k)] = row
    return rows


def auc(found: list[float], missed: list[float]) -> float | None:
    """P(a found clot's value > a missed clot's), ties counting half (Mann-Whitney)."""
    if not found or not missed:
        return None
    f, m = np.asarray(found)[:, None], np.asarray(missed)[None, :]
    return round(float(((f > m) + 0.5 * (f == m)).mean()), 3)


def explain(rows: dict[str, dict], result: dict, cohort: str) -> dict:
    """How one quality.py result's found / missed clots relate to visibility."""
    table = result["cohorts"][cohort]["per_patient"]
    det = {r["case_id"]: r["detection"] == "TP" for r in table if rows.get(r["case_id"], {}).get("has_clot")}
    vis = {c: rows[c]["cnr_both"] for c in det if math.isfinite(rows[c]["cnr_both"])}
    cuts = np.quantile(list(vis.values()), [1 / 3, 2 / 3])
    thirds = {}
    for name, lo, hi in (("least visible third", -math.inf, cuts[0]),
                         ("middle third", cuts[0], cuts[1]),
                         ("most visible third", cuts[1], math.inf)):
        ids = [c for c, v in vis.items() if lo <= v < hi or (hi == math.inf and v >= lo)]
        thirds[name] = {"cnr_both_range": [round(float(max(lo, min(vis[c] for c in ids))), 2),
                                           round(float(max(vis[c] for c in ids)), 2)],
                        "n": len(ids), "found": sum(det[c] for c in ids)}
    missed = [c for c in det if not det[c]]
    return {"label": result.get("label"), "run": result.get("run"),
            "clots": len(det), "missed": len(missed),
            "auc_cnr_both": auc([vis[c] for c in vis if det[c]], [vis[c] for c in vis if not det[c]]),
            "auc_cnr_cta": auc(*_split(rows, det, "cnr_cta")),
            "auc_cnr_ncct": auc(*_split(rows, det, "cnr_ncct")),
            "by_visibility": thirds,
            "missed_cases": sorted(missed)}


def _split(rows, det, key):
    vals = {c: rows[c][key] for c in det if math.isfinite(rows[c][key])}
    return [v for c, v in vals.items() if det[c]], [v for c, v in vals.items() if not det[c]]


def consistent(rows: dict[str, dict], explained: list[dict]) -> dict:
    """The clots every run missed against those every run found: their numbers, where
    they lie and the median of each visibility measure (what the runs agree is hard)."""
    clots = [c for c, r in rows.items() if r["has_clot"]]
    missed = [set(e["missed_cases"]) for e in explained]
    groups = {"missed_by_every_run": [c for c in clots if all(c in m for m in missed)],
              "found_by_every_run": [c for c in clots if not any(c in m for m in missed)]}
    out = {}
    for name, ids in groups.items():
        out[name] = {"n": len(ids),
                     "locations": {loc: sum(rows[c]["location"] == loc for c in ids)
                                   for loc in sorted({rows[c]["location"] for c in clots})},
                     "thick_ncct": sum(rows[c]["ncct_thickness_mm"] is not None for c in ids),
                     "faint": sum(rows[c]["faint"] for c in ids)}
        for key in ("cnr_cta", "cnr_ncct", "cta_contrast_hu", "ncct_contrast_hu",
                    "cta_clot_minus_tissue_hu", "ncct_clot_minus_tissue_hu", "clot_voxels"):
            vals = [rows[c][key] for c in ids if math.isfinite(rows[c][key])]
            out[name][f"median_{key}"] = round(float(np.median(vals)), 2) if vals else None
        out[name]["cases"] = ids
    return out


def summary(rows: dict[str, dict]) -> dict:
    """Quartiles of each visibility measure over the cohort's clots."""
    clots = [r for r in rows.values() if r["has_clot"]]
    out = {}
    for key in ("cnr_cta", "cnr_ncct", "cnr_both", "cta_contrast_hu", "ncct_contrast_hu",
                "cta_clot_minus_tissue_hu", "ncct_clot_minus_tissue_hu", "cta_spread_hu",
                "ncct_spread_hu", "clot_voxels"):
        vals = np.array([r[key] for r in clots], dtype=float)
        vals = vals[np.isfinite(vals)]
        out[key] = [round(float(q), 2) for q in np.quantile(vals, [0.1, 0.25, 0.5, 0.75, 0.9])]
    return {"quantiles_10_25_50_75_90": out, "clots": len(clots)}


def main(argv=None) -> int:
    args = parse(argv)
    t0 = time.perf_counter()
    rows = cohort_visibility(args.cohort, args.cases)
    result = {"benchmark": "detectability", "cohort": args.cohort, "cases": args.cases,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "visibility": summary(rows)}
    explained = []
    for path in args.results:
        res = json.loads(Path(path).read_text())
        if args.cohort not in res.get("cohorts", {}) or \
                len(res["cohorts"][args.cohort].get("per_patient", [])) != args.cases:
            raise SystemExit(f"{path}: no {args.cases}-patient {args.cohort!r} cohort in it")
        explained.append({"file": Path(path).name, **explain(rows, res, args.cohort)})
    result["runs"] = explained
    if len(explained) >= 2:
        result["across_runs"] = consistent(rows, explained)
    result["per_case"] = rows
    result["seconds"] = round(time.perf_counter() - t0, 1)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
