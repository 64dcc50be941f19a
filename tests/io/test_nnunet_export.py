"""`clotseg export-nnunet`: a raw nnU-Net dataset with exact geometry, read back by
clotseg through its channel_names."""

from __future__ import annotations

import json

import numpy as np

from clotseg.cli import main
from clotseg.errors import ClotsegError
from clotseg.io.layouts import discover
from clotseg.io.readers import read_volume, write_volume
from tests.helpers import DIRECTIONS, make_volume


def _case(root, name, direction, *, mask=True, ncct_shift=0.0, seed=0):
    cta = make_volume(DIRECTIONS[direction], dtype=np.int16, seed=seed)
    ncct = make_volume(DIRECTIONS[direction], dtype=np.int16, seed=seed + 10)
    if ncct_shift:  # another grid: resampled onto the CTA's on export
        ncct = type(ncct)(ncct.array, ncct.spacing,
                          tuple(np.asarray(ncct.origin) + ncct_shift), ncct.direction)
    write_volume(cta, root / name / "cta.nii.gz")
    write_volume(ncct, root / name / "ncct.nrrd")
    if mask:
        m = np.zeros(cta.shape, np.uint8)
        m[3:6, 2:5, 2:4] = 1
        write_volume(cta.with_array(m), root / name / "clot.nii.gz", mask=True)
    return cta


def test_export_round_trip_keeps_geometry_and_channels(tmp_path, capsys):
    data = tmp_path / "data"
    ctas = {"p1": _case(data, "p1", "oblique"), "p2": _case(data, "p2", "permuted", seed=1),
            "p3": _case(data, "p3", "ras_flip", mask=False, ncct_shift=0.3, seed=2)}
    assert main(["export-nnunet", str(data), str(tmp_path / "raw"), "--id", "7"]) == 0
    assert "2 training case(s)" in capsys.readouterr().out
    ds = tmp_path / "raw" / "Dataset007_Clot"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CTA", "1": "NCCT"} and meta["numTraining"] == 2
    assert meta["labels"] == {"background": 0, "clot": 1} and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == [
        "p1_0000.nii.gz", "p1_0001.nii.gz", "p2_0000.nii.gz", "p2_0001.nii.gz"]
    assert sorted(p.name for p in (ds / "imagesTs").iterdir()) == [
        "p3_0000.nii.gz", "p3_0001.nii.gz"]
    index = discover(ds)
    assert index.layout == "nnunet" and index.case_ids == ["p1", "p2", "p3"]
    for cid, cta in ctas.items():
        case = index[cid].load()
        assert case.cta.grid.same_as(cta.grid) and case.ncct.grid.same_as(cta.grid)
        np.testing.assert_array_equal(case.cta.array, cta.array)
        if cid != "p3":
            ref = read_volume(data / cid / "clot.nii.gz")
            np.testing.assert_array_equal(case.mask.array, ref.array)
            np.testing.assert_array_equal(case.ncct.array,
                                          read_volume(data / cid / "ncct.nrrd").array)
    # An existing dataset is not overwritten.
    assert main(["export-nnunet", str(data), str(tmp_path / "raw"), "--id", "7"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_a_bad_case_is_reported_and_left_out_and_the_others_exported(tmp_path, capsys):
    data = tmp_path / "data"
    _case(data, "p1", "oblique")
    _case(data, "p2", "permuted", seed=1)
    _case(data, "p3", "ras_flip", seed=2)
    (data / "p2" / "cta.nii.gz").write_text("broken")  # unreadable after its label exists
    assert main(["export-nnunet", str(data), str(tmp_path / "raw"), "--id", "8"]) == 1
    out, err = capsys.readouterr()
    assert "2 training case(s)" in out
    assert "FAILED p2:" in err and "cta.nii.gz" in err and "1 case(s) left out" in err
    assert "Traceback" not in err
    ds = tmp_path / "raw" / "Dataset008_Clot"
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == [
        "p1_0000.nii.gz", "p1_0001.nii.gz", "p3_0000.nii.gz", "p3_0001.nii.gz"]
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == ["p1.nii.gz", "p3.nii.gz"]
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and "left out: p2" in meta["description"]
    assert discover(ds).case_ids == ["p1", "p3"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset008_Clot"]


def test_a_mask_on_another_grid_is_a_failed_case(tmp_path, capsys):
    data = tmp_path / "data"
    _case(data, "p1", "oblique")
    _case(data, "p2", "permuted", seed=1)
    bad = make_volume(DIRECTIONS["oblique"], dtype=np.uint8, seed=3)  # another grid
    write_volume(bad.with_array(np.ones(bad.shape, np.uint8)), data / "p2" / "clot.nii.gz",
                 mask=True)
    assert main(["export-nnunet", str(data), str(tmp_path / "raw"), "--id", "9"]) == 1
    assert "FAILED p2:" in capsys.readouterr().err
    ds = tmp_path / "raw" / "Dataset009_Clot"
    files = sorted(p.name for p in ds.rglob("*.nii.gz"))
    assert files == ["p1.nii.gz", "p1_0000.nii.gz", "p1_0001.nii.gz"]


def test_a_case_failing_after_its_images_leaves_none_of_its_files(tmp_path, capsys,
                                                                  monkeypatch):
    import clotseg.io.nnunet as nnunet

    data = tmp_path / "data"
    _case(data, "p1", "oblique")
    _case(data, "p2", "permuted", seed=1)
    real = nnunet.write_on_grid

    def failing_label(vol, path, grid, *, mask):  # the label check fails after both images
        if path.name == "p2.nii.gz":
            raise ClotsegError(f"{path}: read back with another grid")
        return real(vol, path, grid, mask=mask)

    monkeypatch.setattr(nnunet, "write_on_grid", failing_label)
    assert main(["export-nnunet", str(data), str(tmp_path / "raw"), "--id", "11"]) == 1
    assert "FAILED p2:" in capsys.readouterr().err
    ds = tmp_path / "raw" / "Dataset011_Clot"
    files = sorted(p.name for p in ds.rglob("*.nii.gz"))
    assert files == ["p1.nii.gz", "p1_0000.nii.gz", "p1_0001.nii.gz"]


def test_no_dataset_when_no_case_can_be_exported(tmp_path, capsys):
    data = tmp_path / "data"
    _case(data, "p1", "oblique")
    (data / "p1" / "cta.nii.gz").write_text("broken")
    assert main(["export-nnunet", str(data), str(tmp_path / "raw"), "--id", "10"]) == 1
    err = capsys.readouterr().err
    assert "no case could be exported" in err and "p1" in err
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())
