"""``benchmarks/postprocess_grid.py``: at the run's own setting its masks are the masks
``predict`` writes, so the grid's other settings are comparable with predict's results."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
grid = pytest.importorskip("postprocess_grid")

from clotseg.cli import main  # noqa: E402
from clotseg.io.layouts import discover  # noqa: E402
from clotseg.io.readers import read_volume  # noqa: E402
from tests.inference.conftest import write_run  # noqa: E402


def test_the_grid_at_the_runs_setting_reproduces_predicts_masks(phantom_cohort, tmp_path,
                                                                monkeypatch):
    # The stub network marks everything brighter than ~220 HU on the CTA (lumen, bone):
    # several components per case, so the size rule and the primary clot both matter.
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2}, threshold=0.5,
                    min_component_mm3=20.0, grow_threshold=0.5)
    pred = tmp_path / "pred"
    assert main(["predict", str(run), str(phantom_cohort), str(pred), "--save-prob",
                 "--quiet", "--device", "cpu"]) == 0
    monkeypatch.setattr(grid, "THRESHOLDS", (0.5,))
    monkeypatch.setattr(grid, "MIN_COMPONENTS_MM3", (20.0,))
    rows = grid.case_rows(pred, phantom_cohort, 0.5)[(0.5, 20.0)]
    truth = {c.case_id: np.asarray(c.read("mask").array) > 0
             for c in discover(phantom_cohort).cases}
    assert sorted(r[4] for r in rows) == sorted(truth)
    masks_seen = 0
    for has_clot, not_empty, touched, dice, case_id in rows:
        written = np.asarray(read_volume(pred / f"{case_id}.nii.gz").array) > 0
        ref = truth[case_id]
        masks_seen += int(written.any())
        assert not_empty == bool(written.any()) and has_clot == bool(ref.any())
        assert touched == bool((written & ref).any())
        total = written.sum() + ref.sum()
        assert dice == pytest.approx(1.0 if total == 0 else 2 * (written & ref).sum() / total)
    assert masks_seen >= 1
    summary = grid.summarise(rows)
    assert summary["n_clot"] + summary["n_clot_free"] == len(rows)


def test_region_rule_sizes_a_core_by_the_region_it_grows_into():
    # A 1-voxel core in an 8-voxel body between 0.5 and 0.8, and a 1-voxel core alone.
    prob = np.zeros((20, 5, 5), np.float32)
    prob[2:10, 2, 2] = 0.6
    prob[5, 2, 2] = 0.9
    prob[15, 2, 2] = 0.95
    kept = grid.region_sized(prob, (1.0, 1.0, 1.0), 0.8, 5.0, 0.5)
    assert kept[:, 2, 2].nonzero()[0].tolist() == [5]  # the core only; growth comes later
    core_rule = grid.postprocess(prob, (1.0, 1.0, 1.0), threshold=0.8, min_component_mm3=5.0)
    assert not core_rule.any()  # predict's rule: both cores are under 5 mm³
