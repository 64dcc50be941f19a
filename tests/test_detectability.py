"""``benchmarks/detectability.py``: the contrast it measures is the clot's, and its AUC says
whether visibility orders found above missed clots."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
det = pytest.importorskip("detectability")

from clotseg.synth.phantom import LABELS, make_case  # noqa: E402


def _clot_case():
    for seed in range(20):
        case = make_case(seed, "small", clot=True)
        if case.truth["location"] == "M1":
            return case
    raise AssertionError("no M1 phantom in 20 seeds")


def test_a_clot_painted_like_its_lumen_has_no_cta_contrast_left():
    case = _clot_case()
    seen = det.clot_visibility(case)
    assert seen["cta_contrast_hu"] > 50 and seen["cnr_cta"] > 2  # a filling defect
    assert seen["clot_voxels"] == int(case.clot.array.sum()) and seen["lumen_voxels"] > 0
    clot = np.asarray(case.clot.array) > 0
    lumen = np.asarray(case.labels.array) == LABELS["lumen"]
    cta = np.array(case.cta.array)
    cta[clot] = int(round(cta[lumen & ~clot].mean()))  # no defect: the clot looks like lumen
    painted = dataclasses.replace(case, cta=case.cta.with_array(cta))
    gone = det.clot_visibility(painted)
    assert abs(gone["cnr_cta"]) < 0.3 * seen["cnr_cta"]
    assert gone["cnr_ncct"] == seen["cnr_ncct"]  # the NCCT is untouched


def test_auc_orders_found_above_missed_and_explain_reads_the_runs_table():
    assert det.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert det.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert det.auc([1.0], [1.0]) == 0.5 and det.auc([], [1.0]) is None
    rows = {f"c{i}": {"has_clot": True, "cnr_both": float(i), "cnr_cta": float(i),
                      "cnr_ncct": float(-i)} for i in range(9)}
    rows["free"] = {"has_clot": False}
    table = [{"case_id": c, "detection": "TP" if i >= 3 else "FN"} for i, c in enumerate(rows)]
    table[-1]["detection"] = "TN"
    out = det.explain(rows, {"cohorts": {"shifted": {"per_patient": table}}}, "shifted")
    assert out["clots"] == 9 and out["missed"] == 3
    assert out["auc_cnr_both"] == 1.0 and out["auc_cnr_ncct"] == 0.0
    thirds = out["by_visibility"]
    assert [t["found"] for t in thirds.values()] == [0, 3, 3]
    assert sum(t["n"] for t in thirds.values()) == 9


def test_across_runs_separates_what_every_run_missed_from_what_every_run_found():
    rows = {f"c{i}": {"has_clot": True, "location": "M1" if i % 2 else "M2",
                      "ncct_thickness_mm": None, "faint": False, "cnr_cta": float(i),
                      "cnr_ncct": 0.0, "cta_contrast_hu": 1.0, "ncct_contrast_hu": 1.0,
                      "cta_clot_minus_tissue_hu": 1.0, "ncct_clot_minus_tissue_hu": 1.0,
                      "clot_voxels": 10 * i} for i in range(6)}
    runs = [{"missed_cases": ["c0", "c1", "c2"]}, {"missed_cases": ["c0", "c1", "c3"]}]
    out = det.consistent(rows, runs)
    assert out["missed_by_every_run"]["cases"] == ["c0", "c1"]
    assert out["found_by_every_run"]["cases"] == ["c4", "c5"]
    assert out["missed_by_every_run"]["locations"] == {"M1": 1, "M2": 1}
    assert out["found_by_every_run"]["median_clot_voxels"] == 45.0
