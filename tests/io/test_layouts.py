"""Layout detection and lazy case indexing for the three supported layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.errors import DatasetError
from clotseg.io import write_volume
from clotseg.io.layouts import discover
from tests.helpers import DIRECTIONS, make_volume


def _pair(seed=0):
    cta = make_volume(DIRECTIONS["oblique"], seed=seed)
    ncct = cta.with_array(cta.array - 20)
    mask = cta.with_array((cta.array > 80).astype(np.uint8))
    return cta, ncct, mask


def test_case_folders(tmp_path):
    for i, ext in enumerate(["nii.gz", "nrrd", "mha"]):
        cta, ncct, mask = _pair(i)
        write_volume(cta, tmp_path / f"p{i}" / f"cta.{ext}")
        write_volume(ncct, tmp_path / f"p{i}" / f"ncct.{ext}")
        if i < 2:
            write_volume(mask, tmp_path / f"p{i}" / "clot.nii.gz", mask=True)
    (tmp_path / "notes").mkdir()  # unrelated folder is ignored
    index = discover(tmp_path)
    assert index.layout == "folders"
    assert index.case_ids == ["p0", "p1", "p2"]
    assert index["p2"].mask is None
    case = index["p1"].load()
    np.testing.assert_array_equal(case.cta.array, _pair(1)[0].array)
    assert case.mask is not None and case.mask.array.dtype == np.uint8


def test_single_case_folder(tmp_path):
    cta, ncct, _ = _pair()
    write_volume(cta, tmp_path / "cta.nii.gz")
    write_volume(ncct, tmp_path / "ncct.nii.gz")
    index = discover(tmp_path)
    assert index.layout == "case" and index.case_ids == [tmp_path.name]
    assert index.cases[0].load().mask is None


def test_nnunet_raw(tmp_path):
    for i in range(2):
        cta, ncct, mask = _pair(i)
        write_volume(cta, tmp_path / "imagesTr" / f"clot_{i:03d}_0000.nii.gz")
        write_volume(ncct, tmp_path / "imagesTr" / f"clot_{i:03d}_0001.nii.gz")
        write_volume(mask, tmp_path / "labelsTr" / f"clot_{i:03d}.nii.gz", mask=True)
    cta, ncct, _ = _pair(5)
    write_volume(cta, tmp_path / "imagesTs" / "new_001_0000.nii.gz")
    write_volume(ncct, tmp_path / "imagesTs" / "new_001_0001.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CTA", "1": "NCCT"}, "labels": {"background": 0, "clot": 1}}))
    index = discover(tmp_path)
    assert index.layout == "nnunet" and not index.problems
    assert index.case_ids == ["clot_000", "clot_001", "new_001"]
    assert index["clot_001"].mask is not None and index["new_001"].mask is None
    np.testing.assert_array_equal(index["clot_001"].load().ncct.array, _pair(1)[1].array)
    # one channel alone: a one-modality case (no problem), found by predict in imagesTs
    write_volume(ncct, tmp_path / "imagesTs" / "new_002_0001.nii.gz")
    one = discover(tmp_path)["new_002"]
    assert one.problems == () and one.missing == ("cta",) and one.load().cta is None
    from clotseg.api import find_cases

    assert [c.case_id for c in find_cases(tmp_path / "imagesTs")] == ["new_001", "new_002"]


def test_original_npy_layout_warns_and_uses_spacing(tmp_path):
    vol_dir = tmp_path / "DL_vol_files" / "binary"
    seg_dir = tmp_path / "DL_seg_files" / "binary"
    vol_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for cid in ("CS1", "CS2", "CS10"):
        np.save(vol_dir / f"{cid}_CTA_Binary.npy", rng.normal(100, 50, (8, 9, 5)))
        np.save(vol_dir / f"{cid}_NCCT_Reg_Binary.npy", rng.normal(40, 10, (8, 9, 5)))
        np.save(seg_dir / f"{cid}_seg_corrected_binary.npy", np.zeros((8, 9, 5), np.uint8))
    with pytest.warns(UserWarning, match="assuming 1 mm"):
        index = discover(tmp_path)
    assert index.layout == "original"
    assert index.case_ids == ["CS1", "CS2", "CS10"]  # natural order
    assert index["CS1"].load().cta.spacing == (1.0, 1.0, 1.0)
    index = discover(tmp_path, spacing=(0.5, 0.5, 1.5))
    case = index["CS10"].load()
    assert case.cta.spacing == (0.5, 0.5, 1.5) and case.mask.shape == (8, 9, 5)


def test_one_modality_is_a_case_and_neither_is_a_problem(tmp_path):
    # One scan alone is a case predict can use (was a problem before missing-modality
    # models); a folder with neither scan is still a problem.
    cta, ncct, mask = _pair()
    write_volume(cta, tmp_path / "a" / "cta.nii.gz")
    write_volume(ncct, tmp_path / "b" / "ncct.nii.gz")
    write_volume(mask, tmp_path / "c" / "clot.nii.gz", mask=True)
    index = discover(tmp_path)
    assert index["a"].problems == () and index["a"].missing == ("ncct",)
    vols = index["a"].load()
    assert vols.ncct is None and vols.inputs == ("cta",) and vols.reference is vols.cta
    b = index["b"].load()
    assert b.cta is None and b.reference.grid.same_as(ncct.grid)
    assert "neither a CTA nor an NCCT" in index["c"].problems[0]
    with pytest.raises(DatasetError, match="neither a CTA nor an NCCT"):
        index["c"].load()
    single = discover(tmp_path / "b")  # a single case folder with only an NCCT
    assert single.layout == "case" and single.case_ids == ["b"]


def test_folder_named_like_a_volume_file_is_a_problem(tmp_path):
    # cta.nii.gz/ as a folder must not turn the case into a silent NCCT-only one
    _, ncct, _ = _pair()
    write_volume(ncct, tmp_path / "p1" / "ncct.nii.gz")
    (tmp_path / "p1" / "cta.nii.gz").mkdir()
    index = discover(tmp_path)
    assert any("folder named like a volume file" in p and "cta.nii.gz" in p
               for p in index["p1"].problems)
    with pytest.raises(DatasetError, match="folder named like a volume file"):
        index["p1"].load()


def test_no_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset found"):
        discover(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")
