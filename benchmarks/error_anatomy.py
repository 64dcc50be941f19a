"""Where a run's errors on a phantom test cohort come from, by cause and by anatomy.

``quality.py`` counts missed clots and patients with a speck; this benchmark says why.
It reads a prediction folder written with ``clotseg predict ... --save-prob`` on one of
``quality.py``'s test cohorts, regenerates that cohort in memory (same seeds, shift and
thick-NCCT draws) with the phantom's label map, which is never written to disk, and
sorts:

* every **missed clot** by the step that lost it:

  - ``not_seen``: the probability stays below 0.5 over the whole clot;
  - ``below_threshold``: it reaches 0.5 but not the run's threshold;
  - ``too_small``: a component above the threshold touches the clot, but every such
    component is smaller than the run's size rule;
  - ``other_component_kept``: a component touching the clot passed the size rule, and
    the one-clot-per-patient rule (or the component filter) kept another one;
  - ``unexplained``: none of these (e.g. a component filter dropped the clot's);

* every **false-positive component** (one that touches no clot) by what it lies on:
  ``slow_flow`` (unopacified blood: dark on CTA like a clot, normal on NCCT),
  ``calcification``, ``lumen`` (patent, opacified vessel), or ``outside_vessels``
  (mostly outside any vessel label), the last with its distance to the nearest vessel.
  Counted twice: over the written masks (``final``), and over every candidate, i.e. each
  component of the probability at the threshold that passes the size rule
  (``candidates``), which is what the one-clot rule chooses from.

    clotseg predict RUN work/data/shifted_90 work/preds/run_shifted --save-prob
    python benchmarks/error_anatomy.py work/preds/run_shifted --cohort shifted --cases 90

The threshold and size rule are read from the folder's ``predict.json``. Hand-written
bookkeeping: the steps are connected components and distance transforms (scipy) over
the label map; no library sorts a segmentation's errors by the phantom's anatomy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)
from quality import COHORTS

#: Missed-clot causes, in the order a prediction passes the steps.
MISS_CAUSES = ("not_seen", "below_threshold", "too_small", "other_component_kept",
               "unexplained")
#: Probability under which a clot counts as not seen at all.
SEEN_PROB = 0.5


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pred", help="prediction folder of `clotseg predict --save-prob`")
    p.add_argument("--cohort", default="shifted", choices=[c for c in COHORTS if c != "train"])
    p.add_argument("--cases", type=int, default=90, help="patients (quality.py --test-cases)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p.parse_args(argv)


def miss_cause(prob: np.ndarray, clot: np.ndarray, kept: np.ndarray, threshold: float,
               min_voxels: float) -> str | None:
    """Why the clot ``clot`` is not in the written mask ``kept`` (None: it is)."""
    from scipy import ndimage

    from clotseg.masks import STRUCTURE_26

    if (kept & clot).any():
        return None
    peak = float(prob[clot].max())
    if peak < SEEN_PROB:
        return "not_seen"
    if peak < threshold:
        return "below_threshold"
    labels, _ = ndimage.label(prob >= threshold, structure=STRUCTURE_26)
    touching = np.setdiff1d(np.unique(labels[clot]), [0])
    sizes = ndimage.sum_labels(np.ones(labels.shape, np.float32), labels, touching)
    if touching.size and (sizes < min_voxels).all():
        return "too_small"
    return "other_component_kept" if kept.any() else "unexplained"


def component_sites(mask: np.ndarray, clot: np.ndarray, labels: np.ndarray,
                    spacing, min_voxels: float = 0.0) -> list[dict]:
    """What each component of ``mask`` that touches no clot (and has at least
    ``min_voxels``) lies on, by the label map ``labels`` (module docstring)."""
    from scipy import ndimage

    from clotseg.masks import STRUCTURE_26
    from clotseg.synth.phantom import LABELS

    names = {v: k for k, v in LABELS.items()}
    comp, n = ndimage.label(mask, structure=STRUCTURE_26)
    out = []
    to_vessel = None
    for k, box in enumerate(ndimage.find_objects(comp), start=1):
        part = comp[box] == k
        if part.sum() < min_voxels or (clot[box] & part).any():
            continue
        counts = Counter(labels[box][part].tolist())
        site = names.get(max(counts, key=counts.get), "other")
        row = {"voxels": int(part.sum()), "site": site}
        if site == "background":
            if to_vessel is None:  # once per case, only when needed
                to_vessel = ndimage.distance_transform_edt(labels == LABELS["background"],
                                                           sampling=spacing)
            row["site"] = "outside_vessels"
            row["median_mm_to_vessel"] = round(float(np.median(to_vessel[box][part])), 2)
        out.append(row)
    return out


def analyse_case(case, pred: Path, case_id: str, threshold: float,
                 min_mm3: float) -> dict:
    """Miss cause and false-positive sites of one case (module docstring)."""
    from clotseg.io.readers import read_volume

    prob_vol = read_volume(pred / f"{case_id}_prob.nii.gz")
    mask_vol = read_volume(pred / f"{case_id}.nii.gz")
    grid = case.cta.grid
    for name, vol in (("probability", prob_vol), ("mask", mask_vol)):
        if not vol.grid.same_as(grid):
            raise SystemExit(f"{pred}: the {name} of {case_id} is not on the cohort's CTA grid "
                             "(another cohort or --cases?)")
    prob = np.asarray(prob_vol.array, dtype=np.float32)
    kept = np.asarray(mask_vol.array) > 0
    clot = np.asarray(case.clot.array) > 0
    labels = np.asarray(case.labels.array)
    min_voxels = min_mm3 / float(np.prod(grid.spacing))
    row = {"has_clot": bool(clot.any()), "location": case.truth.get("location", "")}
    if clot.any():
        row["miss_cause"] = miss_cause(prob, clot, kept, threshold, min_voxels)
    row["final_fp"] = component_sites(kept, clot, labels, grid.spacing)
    row["candidate_fp"] = component_sites(prob >= threshold, clot, labels, grid.spacing,
                                          min_voxels)
    return row


def summarise(rows: dict[str, dict]) -> dict:
    """Counts over the cohort: misses by cause (and location), FP components by site."""
    missed = {c: r for c, r in rows.items() if r.get("miss_cause")}
    causes = {k: sum(r["miss_cause"] == k for r in missed.values()) for k in MISS_CAUSES}
    by_location: dict[str, Counter] = {}
    for r in missed.values():
        by_location.setdefault(r["location"], Counter())[r["miss_cause"]] += 1
    out = {"clots": sum(r["has_clot"] for r in rows.values()), "missed": len(missed),
           "missed_by_cause": causes,
           "missed_by_location": {k: dict(v) for k, v in sorted(by_location.items())}}
    for key in ("final_fp", "candidate_fp"):
        comps = [c for r in rows.values() for c in r[key]]
        dist = [c["median_mm_to_vessel"] for c in comps if "median_mm_to_vessel" in c]
        out[key] = {"components": len(comps),
                    "patients": sum(bool(r[key]) for r in rows.values()),
                    "by_site": dict(Counter(c["site"] for c in comps).most_common()),
                    "outside_vessels_median_mm_to_vessel": (round(float(np.median(dist)), 2)
                                                            if dist else None)}
    return out


def main(argv=None) -> None:
    from tqdm import tqdm

    from clotseg.synth.cohort import case_id, cohort_case
    from clotseg.synth.shift import SHIFTS

    args = parse(argv)
    pred = Path(args.pred)
    info_file = pred / "predict.json"
    if not info_file.is_file():
        raise SystemExit(f"{pred}: no predict.json (not a `clotseg predict` output folder)")
    info = json.loads(info_file.read_text())
    threshold, min_mm3 = float(info["threshold"]), float(info["min_component_mm3"] or 0.0)
    seed, shift, _ = COHORTS[args.cohort]
    share = SHIFTS[shift].thick_ncct_share
    t0 = time.perf_counter()
    rows = {}
    for k in tqdm(range(args.cases), desc=f"{args.cohort} cohort", unit="case"):
        cid = case_id(k)
        if not (pred / f"{cid}_prob.nii.gz").is_file():
            raise SystemExit(f"{pred}: no {cid}_prob.nii.gz (predict with --save-prob)")
        _, case = cohort_case(seed, k, "small", shift, share)
        rows[cid] = analyse_case(case, pred, cid, threshold, min_mm3)
    result = {"benchmark": "error_anatomy", "pred": str(pred), "runs": info.get("runs"),
              "cohort": args.cohort, "cases": args.cases, "threshold": threshold,
              "min_component_mm3": min_mm3, **summarise(rows),
              "per_patient": rows, "seconds": round(time.perf_counter() - t0, 1),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
