"""Does a clot patient's speck predict a clot-free patient's false positive?

Training reports, for the post-processing it chose, the share of validation patients
left with a component away from their clot (``clotseg.training.tuning``): validation
folds often hold no clot-free patient, and this share is meant to stand in for the share
of clot-free patients that will get a false positive. This checks it on saved maps
(``predict --save-prob`` folders, e.g. the ``pred_<cohort>_both`` folders that
``benchmarks/postprocess_grid.py`` writes): for each cohort and each threshold × smallest
component, the share of clot patients with a kept component not touching their clot,
and the share of clot-free patients with any kept component, side by side. Prints
JSON; ``--out`` also writes it.

    python benchmarks/speck_share.py --maps val=PRED_VAL:DATA_VAL \\
        --maps same=PRED_SAME:DATA_SAME --maps shifted=PRED_SHIFTED:DATA_SHIFTED --out r.json

The counting is training's own (:func:`clotseg.training.tuning._scores`), so the check
is of what training reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

from clotseg.io.layouts import discover  # noqa: E402
from clotseg.io.readers import read_volume  # noqa: E402
from clotseg.training.tuning import _scores  # noqa: E402

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_COMPONENTS_MM3 = (5.0, 10.0, 20.0, 40.0)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", action="append", default=[], metavar="NAME=PRED:DATA",
                   help="a cohort: its predict --save-prob folder and its dataset")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def case_flags(prob: np.ndarray, truth: np.ndarray, spacing) -> dict[tuple[float, float], bool]:
    """(threshold, size) -> a kept component lies away from the clot (any, without one),
    counted by the very code training reports it with (``tuning._scores``)."""
    speck = _scores(prob, truth, spacing, THRESHOLDS, MIN_COMPONENTS_MM3)[2]
    return {(t, m): bool(speck[i, j]) for i, t in enumerate(THRESHOLDS)
            for j, m in enumerate(MIN_COMPONENTS_MM3)}


def cohort_table(pred: Path, data: Path) -> dict:
    """Per setting: speck share among clot patients, false-positive share among clot-free
    ones, and the patient counts."""
    flags: dict[tuple[float, float], list[tuple[bool, bool]]] = {}
    for case in discover(data).cases:
        vol = read_volume(pred / f"{case.case_id}_prob.nii.gz")
        truth = np.asarray(case.read("mask").array) > 0
        for key, speck in case_flags(np.asarray(vol.array, np.float32), truth,
                                     vol.spacing).items():
            flags.setdefault(key, []).append((bool(truth.any()), speck))
    table = {}
    for (t, m), rows in flags.items():
        clot = [s for has, s in rows if has]
        free = [s for has, s in rows if not has]
        table[f"{t:g}/{m:g}"] = {
            "speck_share_clot_patients": round(float(np.mean(clot)), 3) if clot else None,
            "fp_share_clot_free": round(float(np.mean(free)), 3) if free else None,
            "n_clot": len(clot), "n_clot_free": len(free)}
    return table


def agreement(table: dict) -> dict | None:
    """How far the two shares lie apart over the grid (cohorts with both kinds)."""
    pairs = [(v["speck_share_clot_patients"], v["fp_share_clot_free"]) for v in table.values()
             if v["speck_share_clot_patients"] is not None and v["fp_share_clot_free"] is not None]
    if not pairs:
        return None
    a, b = np.array(pairs).T
    return {"max_abs_difference": round(float(np.abs(a - b).max()), 3),
            "mean_abs_difference": round(float(np.abs(a - b).mean()), 3),
            "pearson_r": round(float(np.corrcoef(a, b)[0, 1]), 3)}


def main(argv=None) -> None:
    args = parse(argv)
    cohorts = {}
    for item in args.maps:
        name, _, paths = item.partition("=")
        pred, _, data = paths.partition(":")
        table = cohort_table(Path(pred), Path(data))
        cohorts[name] = {"pred": pred, "data": data, "agreement": agreement(table),
                         "grid": table}
    emit({"benchmark": "speck_share", "key": "threshold/min_component_mm3",
          "cohorts": cohorts}, args.out)


if __name__ == "__main__":
    main()
