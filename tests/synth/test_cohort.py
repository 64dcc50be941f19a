"""`clotseg synth` and write_cohort: files, truth.csv, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.io import read_volume
from clotseg.synth import case_seed, make_case, write_cohort


def test_write_cohort_round_trip(tmp_path):
    truth = write_cohort(tmp_path, 3, seed=4, progress=False)
    rows = list(csv.DictReader(truth.open()))
    assert [r["case_id"] for r in rows] == ["synth_000", "synth_001", "synth_002"]
    case = make_case(case_seed(4, 1))
    cta = read_volume(tmp_path / "synth_001" / "cta.nii.gz")
    clot = read_volume(tmp_path / "synth_001" / "clot.nii.gz")
    np.testing.assert_array_equal(cta.array, case.cta.array)
    assert cta.grid.same_as(case.cta.grid)
    assert clot.array.dtype == np.uint8
    vol = float(rows[1]["volume_mm3"])
    assert vol == pytest.approx(clot.array.sum() * np.prod(clot.spacing), rel=1e-3)


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "--cases", "2", "--seed", "1"]) == 0
    assert (tmp_path / "d" / "synth_001" / "ncct.nii.gz").is_file()
    assert (tmp_path / "d" / "truth.csv").is_file()
    assert main(["synth", str(tmp_path / "e"), "--cases", "0"]) == 2
    assert main(["synth", str(tmp_path / "f"), "--cases", "1", "--unregistered"]) == 0
    assert (tmp_path / "f" / "synth_000" / "motion.json").is_file()
