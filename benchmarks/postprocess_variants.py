"""Post-processing variants scored on saved probability maps, without retraining.

``clotseg predict RUN DATA PRED --save-prob --all-components`` writes
``<case>_prob.nii.gz``; this script turns those maps into masks with each variant, measures
them per patient (``cases.csv``, as ``predict`` does) and scores them exactly as
``benchmarks/quality.py`` does, so variants of threshold, hysteresis and the primary-clot
rule (and growing the kept clot, ``primary_grown_*``: what ``predict`` does with
``train.grow_threshold``) can be compared on the same network output. Prints JSON;
``--out`` also writes it.

    python benchmarks/postprocess_variants.py PRED DATA --threshold 0.6 --out v.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the benchmark next to this one)

from clotseg.io.layouts import discover  # noqa: E402
from clotseg.io.readers import read_volume, write_volume  # noqa: E402
from clotseg.masks import (  # noqa: E402
    STRUCTURE_26,
    filter_components,
    keep_primary,
    keep_primary_grown,
)
from clotseg.measure.patient import PATIENT_CSV_COLUMNS, summarise_patient  # noqa: E402
from clotseg.preprocess.resample import resample_to_grid  # noqa: E402

MIN_MM3 = 10.0


def hysteresis(prob: np.ndarray, spacing, high: float, low: float) -> np.ndarray:
    """Components of ``prob >= low`` that hold a voxel ``>= high`` (grown seeds)."""
    labels, _ = ndimage.label(prob >= low, structure=STRUCTURE_26)
    seeds = np.unique(labels[prob >= high])
    return filter_components(np.isin(labels, seeds[seeds > 0]), spacing,
                             min_component_mm3=MIN_MM3)


def variants(t: float) -> dict:
    """name -> (prob, spacing) -> mask, around the run's threshold ``t``."""
    def plain(level):
        return lambda p, s: filter_components(p >= level, s, min_component_mm3=MIN_MM3)

    def primary(make):
        return lambda p, s: keep_primary(make(p, s), p, s)[0]

    def grown(make, low):  # predict's default: primary clot, then grown (not into the dropped)
        return lambda p, s: keep_primary_grown(make(p, s), p, s, low)[0]

    return {"base": plain(t), "primary": primary(plain(t)),
            "hysteresis_0.3": lambda p, s: hysteresis(p, s, t, 0.3),
            "hysteresis_0.3_primary": primary(lambda p, s: hysteresis(p, s, t, 0.3)),
            "threshold_0.4": plain(0.4), "threshold_0.4_primary": primary(plain(0.4)),
            "threshold_0.3_primary": primary(plain(0.3)),
            "primary_grown_0.5": grown(plain(t), 0.5), "primary_grown_0.4": grown(plain(t), 0.4),
            "primary_grown_0.3": grown(plain(t), 0.3), "primary_grown_0.2": grown(plain(t), 0.2)}


def score_variant(name, make, loaded, data: Path, work: Path) -> dict:
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cid, cta, ncct, prob in loaded:
        mask = cta.with_array(make(prob, cta.spacing).astype(np.uint8))
        write_volume(mask, out / f"{cid}.nii.gz", mask=True)
        rows.append(summarise_patient(cid, mask, cta, ncct, prob))
    with open(out / "cases.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, PATIENT_CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    result = quality.score(out, data)
    result.pop("per_patient")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", help="predict output folder holding <case>_prob.nii.gz")
    ap.add_argument("data", help="the test cohort (with truth.csv, from clotseg synth)")
    ap.add_argument("--threshold", type=float, required=True, help="the run's threshold")
    ap.add_argument("--work", default=None, help="where variant masks go (default PRED/variants)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    pred, data = Path(args.pred), Path(args.data)
    loaded = []
    for ref in discover(str(data)).cases:
        case = ref.load(with_mask=False)
        ncct = case.ncct
        if not ncct.grid.same_as(case.cta.grid):  # measurements need it on the CTA grid
            ncct = resample_to_grid(ncct, case.cta.grid, default_value=-1000.0)
        prob = read_volume(pred / f"{ref.case_id}_prob.nii.gz")
        loaded.append((ref.case_id, case.cta, ncct, np.asarray(prob.array, np.float32)))
    work = Path(args.work) if args.work else pred / "variants"
    result = {"benchmark": "postprocess_variants", "pred": str(pred), "data": str(data),
              "threshold": args.threshold, "min_component_mm3": MIN_MM3,
              "variants": {name: score_variant(name, make, loaded, data, work)
                           for name, make in variants(args.threshold).items()}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
