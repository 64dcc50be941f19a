"""Patients given no mask: can one-scan maps tell a missed clot from a clot-free scan?

The review score of a patient given no mask rests on ``near_miss`` (the highest
probability), and on the phantom that ranks missed clots no higher than clot-free scans;
those patients bound the score's correlation with Dice. This asks whether the maps the
network makes from each scan alone (``clotseg predict --save-prob`` on copies of the cohort
without the NCCT and without the CTA, as ``benchmarks/quality.py`` makes them) separate
the two. For every patient of a ``quality.py`` result whose mask is empty it reads, from
each map given: the peak probability, the probability mass at or above 0.5, the largest
component at or above 0.5 (voxels) and the voxels at or above the run's threshold, and
reports the AUC of each (the chance that a missed clot scores higher than a clot-free
scan; 0.5 is no separation). Prints JSON; ``--out`` also writes it.

    python benchmarks/qc_empty_masks.py RESULT.json --maps shifted:both=P1 \\
        --maps shifted:cta=P2 --maps shifted:ncct=P3 --out r.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

from clotseg.io.readers import read_volume  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path, help="a benchmarks/quality.py result (per_patient)")
    p.add_argument("--maps", action="append", default=[], metavar="COHORT:INPUT=DIR",
                   help="a predict --save-prob folder for a cohort and input combination")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def map_features(prob: np.ndarray, threshold: float) -> dict[str, float]:
    """What a map shows of a clot it did not keep (module docstring)."""
    labels, n = ndimage.label(prob >= 0.5)
    largest = float(np.bincount(labels.ravel())[1:].max()) if n else 0.0
    return {"peak": float(prob.max()), "mass05": float(prob[prob >= 0.5].sum()),
            "largest05": largest, "above_threshold": float((prob >= threshold).sum())}


def auc(missed: list[float], free: list[float]) -> float | None:
    """P(a missed clot's value > a clot-free scan's), ties counted half."""
    if not missed or not free:
        return None
    return round(float(stats.mannwhitneyu(missed, free).statistic) / (len(missed) * len(free)),
                 3)


def empty(row: dict) -> bool:
    volume = row.get("pred_volume_mm3")
    return volume is None or not math.isfinite(volume) or volume <= 0


def main(argv=None) -> None:
    args = parse(argv)
    result = json.loads(args.result.read_text())
    threshold = float(result.get("training", {}).get("postprocess", {}).get("threshold")
                      or 0.5)
    maps: dict[str, dict[str, Path]] = {}
    for item in args.maps:
        key, _, folder = item.partition("=")
        cohort, _, inputs = key.partition(":")
        maps.setdefault(cohort, {})[inputs] = Path(folder)
    out = {"benchmark": "qc_empty_masks", "result": args.result.name, "threshold": threshold,
           "cohorts": {}}
    for cohort, folders in maps.items():
        rows = [r for r in result["cohorts"][cohort]["per_patient"] if empty(r)]
        missed = [r["case_id"] for r in rows if r["detection"] == "FN"]
        free = [r["case_id"] for r in rows if r["detection"] != "FN"]
        aucs, medians = {}, {}
        for inputs, folder in sorted(folders.items()):
            table = {r["case_id"]: map_features(
                np.asarray(read_volume(folder / f"{r['case_id']}_prob.nii.gz").array,
                           np.float32), threshold) for r in rows}
            for name in next(iter(table.values()), {}):
                a = [table[c][name] for c in missed]
                b = [table[c][name] for c in free]
                aucs[f"{inputs}_{name}"] = auc(a, b)
                medians[f"{inputs}_{name}"] = {
                    "missed": round(float(np.median(a)), 4) if a else None,
                    "clot_free": round(float(np.median(b)), 4) if b else None}
        out["cohorts"][cohort] = {"patients_without_mask": len(rows),
                                  "missed_clots": len(missed), "auc_missed_above_free": aucs,
                                  "medians": medians}
    emit(out, args.out)


if __name__ == "__main__":
    main()
