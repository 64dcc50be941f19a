"""Per-case evaluation, summary, files written and the `clotseg evaluate` command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.errors import ClotsegError
from clotseg.io.readers import write_volume
from clotseg.io.volume import Volume
from clotseg.metrics.evaluate import evaluate_case, evaluate_dirs, summarize
from tests.helpers import DIRECTIONS

SHAPE = (24, 20, 12)
GEOMETRY = dict(spacing=(0.5, 0.6, 1.5), origin=(10.0, -20.0, 5.0),
                direction=DIRECTIONS["oblique"].ravel())


def vol(array) -> Volume:
    return Volume(np.asarray(array), **GEOMETRY)


def clot(z0: int = 3, z1: int = 9) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[8:12, 6:10, z0:z1] = 1
    return m


def write_dataset(root, refs: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    for case_id, mask in refs.items():
        folder = root / case_id
        for name in ("cta", "ncct"):
            write_volume(vol(rng.normal(40, 5, SHAPE).astype(np.int16)), folder / f"{name}.nii.gz")
        write_volume(vol(mask), folder / "clot.nii.gz", mask=True)


@pytest.fixture
def cohort(tmp_path):
    """Five cases and predictions: perfect, partial, missing file, clot-free (TN, FP)."""
    data, pred = tmp_path / "data", tmp_path / "pred"
    refs = {"a_perfect": clot(), "b_partial": clot(), "c_missing": clot(),
            "d_clean": np.zeros(SHAPE, np.uint8), "e_fp": np.zeros(SHAPE, np.uint8)}
    write_dataset(data, refs)
    partial = clot(3, 6)  # half of the clot
    partial[20:22, 15:17, 10] = 1  # plus a false-positive component
    fp = np.zeros(SHAPE, np.uint8)
    fp[2:4, 2:4, 2:4] = 1
    for case_id, mask in (("a_perfect", clot()), ("b_partial", partial),
                          ("d_clean", np.zeros(SHAPE, np.uint8)), ("e_fp", fp)):
        suffix = ".nrrd" if case_id == "d_clean" else ".nii.gz"  # any volume suffix works
        write_volume(vol(mask), pred / f"{case_id}{suffix}", mask=True)
    return data, pred


def test_evaluate_case_values():
    row = evaluate_case(vol(clot(3, 6)), vol(clot()), "x")
    assert row["dice"] == pytest.approx(2 * 48 / (48 + 96))
    assert row["detection"] == "TP" and row["fp_components"] == 0
    voxel = 0.5 * 0.6 * 1.5
    assert row["ref_volume_mm3"] == pytest.approx(96 * voxel)
    assert row["volume_error_mm3"] == pytest.approx(-48 * voxel)
    assert row["volume_error_pct"] == pytest.approx(-50.0)
    # The reference is a 6-slice (9 mm) bar, the prediction half of it.
    assert row["ref_length_mm"] == pytest.approx(9.0, rel=0.1)
    assert row["length_error_mm"] == pytest.approx(-4.5, abs=0.6)
    assert row["hd95_mm"] == pytest.approx(4.5)  # the 3 missing slices of 1.5 mm
    assert not row["distance_undefined"]


def test_grid_mismatch_names_both_files():
    ref = vol(clot())
    shifted = Volume(clot(), GEOMETRY["spacing"], (11.0, -20.0, 5.0), GEOMETRY["direction"])
    with pytest.raises(ClotsegError, match=r"p\.nii\.gz vs r\.nii\.gz.*origin"):
        evaluate_case(shifted, ref, "x", pred_file="p.nii.gz", ref_file="r.nii.gz")


def test_probability_map_is_refused():
    with pytest.raises(ClotsegError, match="not a binary mask"):
        evaluate_case(vol(clot() * 0.7), vol(clot()), "x")


def test_evaluate_dirs(cohort, tmp_path):
    data, pred = cohort
    out = tmp_path / "res" / "eval.csv"
    with pytest.warns(UserWarning, match="no prediction for case c_missing"):
        rows, summary = evaluate_dirs(pred, data, out)
    by = {r["case_id"]: r for r in rows}
    assert list(by) == ["a_perfect", "b_partial", "c_missing", "d_clean", "e_fp"]
    assert by["a_perfect"]["dice"] == 1.0 and by["a_perfect"]["hd95_mm"] == 0.0
    assert by["b_partial"]["fp_components"] == 1 and by["b_partial"]["detection"] == "TP"
    missing = by["c_missing"]
    assert missing["status"] == "missing prediction" and missing["detection"] == "FN"
    assert missing["dice"] == 0.0 and math.isnan(missing["hd95_mm"])
    assert missing["distance_undefined"]
    assert by["d_clean"]["detection"] == "TN" and by["d_clean"]["dice"] == 1.0
    assert by["e_fp"]["detection"] == "FP" and math.isnan(by["e_fp"]["assd_mm"])

    assert summary["TP"] == 2 and summary["FN"] == 1 and summary["TN"] == 1
    assert summary["FP"] == 1
    assert summary["sensitivity"] == pytest.approx(2 / 3)
    assert summary["specificity"] == pytest.approx(1 / 2)
    assert summary["missed"] == ["c_missing"]
    assert summary["missing_predictions"] == ["c_missing"]
    assert summary["distance_undefined"] == 2
    assert summary["fp_components_per_case"] == pytest.approx(2 / 5)
    hd = summary["metrics"]["hd95_mm"]
    assert hd["n"] == 3 and hd["n_nan"] == 2  # NaNs counted, mean over the finite values
    finite = [r["hd95_mm"] for r in rows if not math.isnan(r["hd95_mm"])]
    assert hd["mean"] == pytest.approx(np.mean(finite))
    assert summary["metrics"]["dice"]["median"] == pytest.approx(np.median(
        [r["dice"] for r in rows]))

    # Files: CSV with one row per case, strict JSON (no NaN) next to it.
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["case_id"] for r in table] == list(by)
    assert table[2]["hd95_mm"] == "nan" and table[2]["status"] == "missing prediction"
    saved = json.loads((tmp_path / "res" / "eval.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert saved["missed"] == ["c_missing"]
    assert not list(out.parent.glob(".*tmp*"))  # no temporary files left behind


def test_evaluate_selected_cases(cohort, tmp_path):
    data, pred = cohort
    rows, summary = evaluate_dirs(pred, data, tmp_path / "e.csv", cases=["e_fp", "a_perfect"])
    assert [r["case_id"] for r in rows] == ["e_fp", "a_perfect"]
    assert summary["specificity"] == 0.0
    with pytest.raises(ClotsegError, match="not in the dataset: zzz"):
        evaluate_dirs(pred, data, tmp_path / "e.csv", cases=["zzz"])


def test_summary_of_no_clot_cases_has_no_sensitivity():
    rows = [evaluate_case(vol(np.zeros(SHAPE, np.uint8)), vol(np.zeros(SHAPE, np.uint8)), "x")]
    summary = summarize(rows)
    assert summary["sensitivity"] is None and summary["specificity"] == 1.0


def test_cli_split_and_table(cohort, tmp_path, capsys):
    data, pred = cohort
    run = tmp_path / "run"
    run.mkdir()
    (run / "splits.json").write_text(json.dumps(
        {"scheme": "kfold", "train": ["c_missing", "d_clean"], "val": ["e_fp"],
         "test": ["a_perfect", "b_partial"]}))
    out = tmp_path / "test.csv"
    assert main(["evaluate", str(pred), str(data), "--out", str(out), "--split", "test",
                 "--run", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "a_perfect" in printed and "b_partial" in printed and "c_missing" not in printed
    assert "sensitivity 1.00" in printed
    assert (tmp_path / "test.json").is_file()
    assert main(["evaluate", str(pred), str(data), "--out", str(out), "--split", "val"]) == 2


def test_cli_bad_inputs_exit_1(cohort, tmp_path, capsys):
    data, pred = cohort
    out = str(tmp_path / "x.csv")
    (pred / "a_perfect.nii.gz").write_bytes(b"\x1f\x8b broken")
    assert main(["evaluate", str(pred), str(data), "--out", out]) == 1
    assert "a_perfect.nii.gz" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope"), str(data), "--out", out]) == 1
    assert main(["evaluate", str(pred), str(tmp_path / "nope"), "--out", out]) == 1


def test_a_bad_prediction_is_reported_and_the_others_are_scored(cohort, tmp_path, capsys):
    data, pred = cohort
    (pred / "b_partial.nii.gz").write_bytes(b"\x1f\x8b broken")
    out = tmp_path / "e.csv"
    assert main(["evaluate", str(pred), str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED b_partial" in err and "b_partial.nii.gz" in err
    with out.open(newline="") as fh:
        scored = [r["case_id"] for r in csv.DictReader(fh)]
    assert scored == ["a_perfect", "c_missing", "d_clean", "e_fp"]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert list(summary["failed"]) == ["b_partial"] and summary["n_cases"] == 4
