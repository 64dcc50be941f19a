"""``benchmarks/ablation.py``: the table reads its numbers from the result files, compares
each arm with its own reference, and names a result file it cannot find."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
ablation = pytest.importorskip("ablation")


def _cohort(missed: int, fp: int, dice: float, **extra) -> dict:
    return {"n_clot": 76, "n_clot_free": 14, "n_patients": 90, "clots_missed": missed,
            "clot_free_with_fp": fp, "median_dice_clot_patients": dice,
            "missed_fraction": missed / 76, "fp_patient_fraction": fp / 14, **extra}


def _write(folder: Path, name: str, shifted: dict, same: dict | None = None) -> str:
    cohorts = {"shifted": shifted, "same": same or _cohort(5, 2, 0.8)}
    (folder / name).write_text(json.dumps({"benchmark": "quality", "cohorts": cohorts}))
    return name


def test_every_result_the_table_names_is_committed():
    names = {n for arm in ablation.ARMS + ablation.EARLY for n in arm.runs + arm.reference}
    names |= {n for files in ablation.SEED_GROUPS.values() for n in files}
    names |= set(ablation.DEFAULTS)
    missing = sorted(n for n in names if not (ablation.RESULTS / n).is_file())
    assert missing == []


def test_an_arm_is_read_against_the_mean_of_its_reference_seeds(tmp_path):
    a = _write(tmp_path, "a.json", _cohort(10, 3, 0.70))
    b = _write(tmp_path, "b.json", _cohort(14, 5, 0.60))
    r1 = _write(tmp_path, "r1.json", _cohort(20, 4, 0.60))
    r2 = _write(tmp_path, "r2.json", _cohort(16, 2, 0.50))
    row = ablation.arm_row(ablation.Arm("x", (a, b), (r1, r2), "kept"), tmp_path)
    assert row["shifted"]["missed"] == [10, 14]
    assert row["shifted_delta"] == {"missed": -6.0, "with_fp": 1.0, "dice": 0.1}
    assert row["same_delta"] == {"missed": 0.0, "with_fp": 0.0, "dice": 0.0}


def test_a_missing_result_is_named_and_the_script_fails(tmp_path, capsys):
    with pytest.raises(ablation.MissingResult, match="nope.json"):
        ablation.site_summary(("nope.json",), "shifted", tmp_path)
    real = tmp_path / "real"
    real.mkdir()  # none of the table's files: the first one it needs is named
    assert ablation.main(["--results", str(real)]) == 1
    err = capsys.readouterr().err
    assert "no such result file" in err and str(real) in err


@pytest.mark.parametrize(("value", "target", "sense", "ok"), [
    (0.86, 0.85, "max", True), (0.84, 0.85, "max", False),
    (0.02, 0.02, "min", True), (0.03, 0.02, "min", False),
    (-0.71, -0.70, "min", True), (-0.52, -0.70, "min", False),
    (math.nan, 0.85, "max", False), (None, 0.02, "min", False),
])
def test_a_target_is_met_only_on_its_side(value, target, sense, ok):
    assert ablation.met(value, target, sense) is ok


def test_targets_give_the_best_run_and_its_file(tmp_path, monkeypatch):
    good = _write(tmp_path, "quality_good_90patients.json",
                  _cohort(1, 0, 0.9, median_dice=0.86, qc_spearman_rho=-0.75))
    poor = _write(tmp_path, "quality_poor_90patients.json",
                  _cohort(20, 6, 0.6, median_dice=0.60, qc_spearman_rho=-0.30))
    (tmp_path / "quality_unscored_90patients.json").write_text(json.dumps({"cohorts": {}}))
    monkeypatch.setattr(ablation, "DEFAULTS", (poor,))
    rows = {t["metric"]: t for t in ablation.target_table("shifted", tmp_path)}
    assert rows["median_dice"]["best_file"] == good and rows["median_dice"]["best_met"]
    assert rows["median_dice"]["defaults_met"] == [False]
    assert rows["missed_fraction"]["best"] == round(1 / 76, 3)
    assert rows["qc_spearman_rho"]["best"] == -0.75 and rows["qc_spearman_rho"]["best_met"]
    assert rows["volume_pearson_r"]["best"] is None and not rows["volume_pearson_r"]["best_met"]


def test_one_scan_gap_and_ncct_detection(tmp_path):
    name = "quality_x_90patients.json"
    result = {"cohorts": {
        "shifted": _cohort(10, 3, 0.7, median_dice=0.70),
        "shifted_cta_only": _cohort(12, 3, 0.68, median_dice=0.67),
        "shifted_ncct_only": _cohort(11, 1, 0.4, median_dice=0.40,
                                     detection_sensitivity=0.86, detection_specificity=0.93),
    }}
    (tmp_path / name).write_text(json.dumps(result))
    [row] = ablation.one_scan_table(tmp_path)
    assert row["cta_gap"] == pytest.approx(0.03) and row["cta_met"] and row["ncct_met"]


def test_the_markdown_has_a_row_per_arm(tmp_path, monkeypatch):
    a = _write(tmp_path, "a.json", _cohort(10, 3, 0.70))
    r = _write(tmp_path, "r.json", _cohort(12, 3, 0.65))
    monkeypatch.setattr(ablation, "ARMS", (ablation.Arm("the change", (a,), (r,), "kept"),))
    monkeypatch.setattr(ablation, "EARLY", ())
    monkeypatch.setattr(ablation, "SEED_GROUPS", {"pair": (a, r)})
    monkeypatch.setattr(ablation, "DEFAULTS", (a,))
    page = ablation.markdown(ablation.build(tmp_path))
    assert "| the change | 10 of 76 | -2.0 | 3 of 14 | +0.0 | 0.70 | +0.05 |" in page
    assert "| pair | 10/12 (range 2) |" in page
