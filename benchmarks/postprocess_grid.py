"""Threshold × smallest-component grid, per input combination, on a run's own maps.

For each cohort (``--cohort NAME=DATA``, plus the run's validation cases as ``val``) and
each input combination (``--inputs``: both scans, CTA only, NCCT only; one-scan cohorts
are real copies without the other scan, made as ``benchmarks/quality.py`` makes them),
``clotseg predict RUN ... --save-prob`` writes the probability maps once; every pair of
:data:`THRESHOLDS` × :data:`MIN_COMPONENTS_MM3` then makes the masks as ``predict`` does
(threshold, size rule, primary clot grown to the run's ``grow_threshold``) and reports
detection sensitivity, specificity (clot-free patients left empty), mean Dice over all
patients and median Dice over clot patients. The question it answers: would choosing
the post-processing per input combination, or on predict's own post-processing, reach
what one setting cannot? ``--size-rule region`` measures the size rule on the region the
core would grow into (the component of ``prob >= grow_threshold`` around it) instead of
on the core above the threshold: a small distal clot can have a core of a few voxels and
a longer body just below the threshold. Prints JSON; ``--out`` also writes it.

    python benchmarks/postprocess_grid.py RUN --cohort same=D1 --cohort shifted=D2 --out g.json
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the benchmark next to this one)
from _output import emit  # noqa: E402

from clotseg.inference.postprocess import postprocess  # noqa: E402
from clotseg.io.layouts import discover  # noqa: E402
from clotseg.io.readers import read_volume  # noqa: E402
from clotseg.masks import keep_primary_grown  # noqa: E402

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_COMPONENTS_MM3 = (5.0, 10.0, 20.0, 40.0, 80.0)
SIZE_RULES = ("core", "region")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--cohort", action="append", default=[], metavar="NAME=DATA",
                   help="a test cohort (repeatable); the run's validation cases come too")
    p.add_argument("--inputs", type=quality._subset("--inputs", quality.INPUTS),
                   default=list(quality.INPUTS))
    p.add_argument("--size-rule", choices=SIZE_RULES, default="core",
                   help="core: components above the threshold (predict's rule); region: "
                        "the grown region around each core (module docstring)")
    p.add_argument("--work", type=Path, default=Path("postprocess_grid_work"))
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def validation_cohort(run: Path, dest: Path) -> Path:
    """The run's validation cases as a cohort of links (with their truth.csv rows)."""
    data = Path(json.loads((run / "train.json").read_text())["data"])
    val = json.loads((run / "splits.json").read_text())["val"]
    if not (dest / "truth.csv").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        for case in val:
            if not (dest / case).exists():
                (dest / case).symlink_to((data / case).resolve(), target_is_directory=True)
        rows = [r for r in quality.read_csv(data / "truth.csv") if r["case_id"] in val]
        with open(dest / "truth.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return dest


def region_sized(prob: np.ndarray, spacing, threshold: float, min_mm3: float,
                 grow: float) -> np.ndarray:
    """The cores (``prob >= threshold``) whose grown region (their component of
    ``prob >= grow``) holds at least ``min_mm3``; the size rule measured on what the kept
    clot becomes rather than on its core."""
    core = postprocess(prob, spacing, threshold=threshold)
    region = postprocess(prob, spacing, threshold=min(grow, threshold),
                         min_component_mm3=min_mm3) > 0
    return (core.astype(bool) & region).astype(np.uint8)


def case_rows(pred: Path, data: Path, grow: float,
              size_rule: str = "core") -> dict[tuple[float, float], list]:
    """(threshold, size) -> per case (has clot, mask not empty, clot touched, Dice, id)."""
    table: dict[tuple[float, float], list] = {}
    for case in discover(data).cases:
        prob_vol = read_volume(pred / f"{case.case_id}_prob.nii.gz")
        prob = np.asarray(prob_vol.array, dtype=np.float32)
        truth = np.asarray(case.read("mask").array) > 0  # the mask alone, not the scans
        for t in THRESHOLDS:
            for m in MIN_COMPONENTS_MM3:
                if size_rule == "region" and grow:
                    mask = region_sized(prob, prob_vol.spacing, t, m, grow)
                else:
                    mask = postprocess(prob, prob_vol.spacing, threshold=t,
                                       min_component_mm3=m)
                mask = keep_primary_grown(mask, prob, prob_vol.spacing, grow)[0] > 0
                inter, total = int((mask & truth).sum()), int(mask.sum() + truth.sum())
                dice = 1.0 if total == 0 else 2.0 * inter / total
                table.setdefault((t, m), []).append((bool(truth.any()), bool(mask.any()),
                                                     inter > 0, dice, case.case_id))
    return table


def summarise(rows: list) -> dict:
    clot = [r for r in rows if r[0]]
    free = [r for r in rows if not r[0]]
    return {"sensitivity": round(float(np.mean([r[2] for r in clot])), 3) if clot else None,
            "specificity": round(float(np.mean([not r[1] for r in free])), 3) if free else None,
            "n_clot": len(clot), "n_clot_free": len(free),
            "mean_dice": round(float(np.mean([r[3] for r in rows])), 3),
            "median_dice_clot_patients": round(float(np.median([r[3] for r in clot])), 3)
            if clot else None}


def main(argv=None) -> None:
    args = parse(argv)
    spec = json.loads((args.run / "model.json").read_text())
    grow = float(spec.get("grow_threshold") or 0.0)
    cohorts = {"val": validation_cohort(args.run, args.work / "val")}
    for item in args.cohort:
        name, _, path = item.partition("=")
        cohorts[name] = Path(path)
    grid = {}
    for name, data in cohorts.items():
        for inputs in args.inputs:
            drop, suffix = quality.INPUTS[inputs]
            cohort = data if drop is None else quality.cohort_without(
                data, drop, args.work / f"{name}{suffix}")
            pred = args.work / f"pred_{name}{suffix or '_both'}"
            if not (pred / "predict.json").is_file():
                subprocess.run([sys.executable, "-m", "clotseg.cli", "predict", str(args.run),
                                str(cohort), str(pred), "--save-prob", "--quiet"], check=True)
            table = case_rows(pred, cohort, grow, args.size_rule)
            grid[f"{name}{suffix or '_both'}"] = {f"{t:g}/{m:g}": summarise(rows)
                                                   for (t, m), rows in table.items()}
    emit({"benchmark": "postprocess_grid", "run": str(args.run),
          "run_threshold": spec.get("threshold"),
          "run_min_component_mm3": spec.get("min_component_mm3"), "grow_threshold": grow,
          "size_rule": args.size_rule,
          "key": "threshold/min_component_mm3", "grid": grid}, args.out)


if __name__ == "__main__":
    main()
