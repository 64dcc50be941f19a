"""``benchmarks/midline_offset.py``: the distance of a written volume's centre from the
phantom's mid-sagittal plane follows the volume's geometry."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
midline_offset = pytest.importorskip("midline_offset")


def test_offset_follows_the_volume_moved_across_and_along_the_midline(phantom_cohort,
                                                                      tmp_path):
    import SimpleITK as sitk

    from clotseg.synth import phantom

    result = midline_offset.cohort_geometry(phantom_cohort)
    assert result["n_cases"] == 8 and set(result["cases"]) == {f"synth_{i:03d}"
                                                                for i in range(8)}
    case = phantom_cohort / "synth_000"
    with open(phantom_cohort / "truth.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["case_id"] == "synth_000")
    seed, size, has = int(row["seed"]), row["size"], row["has_clot"] == "True"
    before = midline_offset.case_geometry(case / "cta.nii.gz", seed, size, has, auto_roi=True)
    assert before["offset_mm"] == pytest.approx(result["cases"]["synth_000"]["offset_mm"],
                                                abs=1e-3)
    assert "auto_roi_mm" not in result["cases"]["synth_000"] and before["auto_roi_mm"] >= 0
    normal = phantom.plan_case(seed, size, clot=has).pose[:, 0]
    across = 100.0 * normal  # further than any offset: 100 +- the signed offset
    along = 30.0 * np.cross(normal, [0.0, 0.0, 1.0]) / np.linalg.norm(np.cross(normal, [0, 0, 1]))
    for move, expect in ((across, None), (along, before["offset_mm"])):
        moved = tmp_path / "cta.nii.gz"
        image = sitk.ReadImage(str(case / "cta.nii.gz"))
        image.SetOrigin(tuple(np.asarray(image.GetOrigin()) + move))
        sitk.WriteImage(image, str(moved))
        after = midline_offset.case_geometry(moved, seed, size, has, auto_roi=True)
        if expect is None:
            assert abs(after["offset_mm"] - 100.0) == pytest.approx(before["offset_mm"], abs=1e-3)
        else:
            assert after["offset_mm"] == pytest.approx(expect, abs=1e-3)
        assert after["tilt_deg"] == pytest.approx(before["tilt_deg"], abs=1e-6)
        # the volume moved, the head in it did not: the plane found moves with the head
        found = abs(after["auto_roi_mm"] - 100.0) if expect is None else after["auto_roi_mm"]
        assert found == pytest.approx(before["auto_roi_mm"], abs=1.5)  # 2 mm working grid
