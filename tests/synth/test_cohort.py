"""`write_cohort` and `clotseg synth`: case folders, truth.csv, read-back geometry, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.io import read_volume
from clotseg.io.layouts import discover
from clotseg.synth import TRUTH_COLUMNS, case_seed, make_case, write_cohort


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_round_trip_geometry_and_truth(tmp_path):
    truth = write_cohort(tmp_path, 3, seed=4, progress=False)
    assert truth == tmp_path / "truth.csv"
    rows = _rows(truth)
    assert [r["case_id"] for r in rows] == ["synth_000", "synth_001", "synth_002"]
    assert list(rows[0]) == TRUTH_COLUMNS
    for k, row in enumerate(rows):
        case = make_case(case_seed(4, k))
        folder = tmp_path / row["case_id"]
        for name in ("cta", "ncct", "clot"):
            vol = read_volume(folder / f"{name}.nii.gz")
            mem = getattr(case, name)
            np.testing.assert_array_equal(vol.array, mem.array)
            assert vol.array.dtype == mem.array.dtype
            assert vol.grid.same_as(mem.grid, atol_mm=1e-4), vol.grid.differences(mem.grid)
        clot = read_volume(folder / "clot.nii.gz")
        assert float(row["volume_mm3"]) == pytest.approx(clot.array.sum() * clot.voxel_volume,
                                                         abs=1e-3)
        assert row["has_clot"] == str(case.truth["has_clot"])
        assert int(row["seed"]) == case_seed(4, k)
        assert float(row["spacing_z"]) == pytest.approx(case.cta.spacing[2], abs=1e-4)
        if case.truth["has_clot"]:
            assert float(row["perviousness_hu"]) == pytest.approx(
                float(row["cta_mean_hu"]) - float(row["ncct_mean_hu"]), abs=1e-3)
    # The dataset layout is recognised and pairs every case.
    index = discover(tmp_path)
    assert sorted(c.case_id for c in index.cases) == ["synth_000", "synth_001", "synth_002"]


def test_case_k_does_not_depend_on_cohort_size(tmp_path):
    write_cohort(tmp_path / "two", 2, seed=9, progress=False)
    write_cohort(tmp_path / "three", 3, seed=9, progress=False)
    for name in ("cta.nii.gz", "clot.nii.gz"):
        a = read_volume(tmp_path / "two" / "synth_001" / name)
        b = read_volume(tmp_path / "three" / "synth_001" / name)
        np.testing.assert_array_equal(a.array, b.array)
        assert a.grid.same_as(b.grid)
    assert _rows(tmp_path / "two" / "truth.csv")[1] == _rows(tmp_path / "three" / "truth.csv")[1]


def test_unregistered_cohort_records_motion(tmp_path):
    write_cohort(tmp_path, 1, seed=2, registered=False, progress=False)
    folder = tmp_path / "synth_000"
    motion = json.loads((folder / "motion.json").read_text())
    assert np.asarray(motion["cta_to_ncct"]).shape == (4, 4)
    cta, ncct = read_volume(folder / "cta.nii.gz"), read_volume(folder / "ncct.nii.gz")
    clot = read_volume(folder / "clot.nii.gz")
    assert not ncct.grid.same_as(cta.grid) and clot.grid.same_as(cta.grid)
    assert _rows(tmp_path / "truth.csv")[0]["registered"] == "False"


def test_cli_synth_writes_cohort_and_refuses_bad_counts(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", str(out), "--cases", "2", "--seed", "1", "--no-progress"]) == 0
    for case in ("synth_000", "synth_001"):
        for name in ("cta", "ncct", "clot"):
            assert (out / case / f"{name}.nii.gz").is_file()
    assert len(_rows(out / "truth.csv")) == 2
    assert "wrote 2 case(s)" in capsys.readouterr().out
    for bad in ("0", "-3"):
        assert main(["synth", str(tmp_path / "e"), "--cases", bad]) == 2
        assert "--cases must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    with pytest.raises(SystemExit) as exc:  # argparse: not an integer / unknown size
        main(["synth", str(tmp_path / "f"), "--cases", "two"])
    assert exc.value.code == 2


def test_no_leftover_temporary_files(tmp_path):
    write_cohort(tmp_path, 1, seed=0, progress=False)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_cohort_case_is_the_case_write_cohort_writes(phantom_cohort):
    """In memory, with the label map the files lack, yet voxel for voxel what is on disk."""
    from clotseg.synth.cohort import cohort_case

    _, case = cohort_case(3, 2)  # the fixture: write_cohort(root, 8, seed=3)
    on_disk = read_volume(phantom_cohort / "synth_002" / "cta.nii.gz")
    assert on_disk.grid.same_as(case.cta.grid)
    np.testing.assert_array_equal(np.asarray(on_disk.array), np.asarray(case.cta.array))
    assert case.labels is not None
