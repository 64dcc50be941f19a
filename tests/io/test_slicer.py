"""3D Slicer ``.seg.nrrd`` files: read as the clot mask (by segment name), written with the
segment named and coloured, geometry kept."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clotseg.errors import VolumeReadError
from clotseg.io.layouts import discover
from clotseg.io.readers import write_volume
from clotseg.io.slicer import read_seg_nrrd, write_seg_nrrd
from clotseg.io.volume import Volume
from tests.helpers import DIRECTIONS, make_volume


def _labelmap(path, labels: np.ndarray, like: Volume, names: dict[int, str],
              layers: np.ndarray | None = None) -> None:
    """A segmentation as Slicer saves it: labelmap + Segment<N>_* header keys."""
    if layers is None:
        image = like.with_array(labels.astype(np.uint8)).to_sitk()
    else:  # several layers: one component per layer
        comps = [like.with_array(layers[..., i].astype(np.uint8)).to_sitk()
                 for i in range(layers.shape[-1])]
        image = sitk.Compose(comps)
        image.CopyInformation(comps[0])
    for n, (value, name) in enumerate(names.items()):
        image.SetMetaData(f"Segment{n}_Name", name)
        image.SetMetaData(f"Segment{n}_LabelValue", str(value if layers is None else 1))
        image.SetMetaData(f"Segment{n}_Layer", str(0 if layers is None else n))
    sitk.WriteImage(image, str(path), useCompression=True)


def _header(path) -> str:
    raw = Path(path).read_bytes()
    return raw[: raw.index(b"\n\n")].decode()


@pytest.mark.parametrize("dname", ["identity", "oblique"])
def test_write_then_read_keeps_mask_geometry_and_segment(tmp_path, dname):
    like = make_volume(DIRECTIONS[dname])
    mask = np.zeros(like.shape, np.uint8)
    mask[3:6, 2:5, 1:4] = 1
    path = write_seg_nrrd(like.with_array(mask), tmp_path / "p1.seg.nrrd")
    header = _header(path)
    for line in ("Segment0_Name:=clot", "Segment0_LabelValue:=1", "Segment0_Layer:=0",
                 "Segment0_Extent:=3 5 2 4 1 3", "Segment0_Color:=0.85 0.12 0.12",
                 "space: left-posterior-superior", "SCT^396339007^Thrombus"):
        assert line in header
    back = read_seg_nrrd(path)
    assert back.grid.same_as(like.grid)
    np.testing.assert_array_equal(back.array, mask)


def test_empty_mask_has_slicer_empty_extent(tmp_path):
    like = make_volume(DIRECTIONS["identity"])
    path = write_seg_nrrd(like.with_array(np.zeros(like.shape, np.uint8)), tmp_path / "e.seg.nrrd")
    assert "Segment0_Extent:=0 -1 0 -1 0 -1" in _header(path)
    assert read_seg_nrrd(path).array.sum() == 0


def test_segment_chosen_by_name_or_as_the_only_one(tmp_path):
    like = make_volume(DIRECTIONS["ras_flip"])
    labels = np.zeros(like.shape, np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[5:8, 4:6, 2:5] = 2
    _labelmap(tmp_path / "a.seg.nrrd", labels, like, {1: "vessel", 2: "Thrombus M1"})
    np.testing.assert_array_equal(read_seg_nrrd(tmp_path / "a.seg.nrrd").array, labels == 2)
    _labelmap(tmp_path / "b.seg.nrrd", labels == 1, like, {1: "Segment_1"})
    np.testing.assert_array_equal(read_seg_nrrd(tmp_path / "b.seg.nrrd").array, labels == 1)


def test_overlapping_segments_on_layers(tmp_path):
    like = make_volume(DIRECTIONS["identity"])
    layers = np.zeros((*like.shape, 2), np.uint8)
    layers[2:7, 2:7, 1:5, 0] = 1  # a vessel
    layers[3:5, 3:5, 2:4, 1] = 1  # the clot inside it, on layer 1
    _labelmap(tmp_path / "l.seg.nrrd", None, like, {1: "ICA", 2: "clot"}, layers=layers)
    back = read_seg_nrrd(tmp_path / "l.seg.nrrd")
    assert back.grid.same_as(like.grid)
    np.testing.assert_array_equal(back.array, layers[..., 1])


def test_ambiguous_segmentation_is_a_clear_error(tmp_path):
    like = make_volume(DIRECTIONS["identity"])
    labels = np.zeros(like.shape, np.uint8)
    labels[1:3, 1:3, 1:3], labels[5:8, 4:6, 2:5] = 1, 2
    _labelmap(tmp_path / "x.seg.nrrd", labels, like, {1: "Segment_1", 2: "Segment_2"})
    with pytest.raises(VolumeReadError, match=r"x\.seg\.nrrd.*none is named 'clot'"):
        read_seg_nrrd(tmp_path / "x.seg.nrrd")


def test_case_folder_reads_and_checks_slicer_mask(tmp_path):
    from clotseg.cli import main

    base = make_volume(DIRECTIONS["oblique"], dtype=np.int16)
    cta = base.with_array(np.asarray(base.array) + 200)  # some contrast-enhanced voxels
    ncct = base.with_array(np.asarray(base.array) + 40)  # its own scan, not the CTA again
    mask = np.zeros(cta.shape, np.uint8)
    mask[4:7, 3:5, 2:4] = 1
    for case in ("good", "bad"):
        write_volume(cta, tmp_path / "data" / case / "cta.nii.gz")
        write_volume(ncct, tmp_path / "data" / case / "ncct.nii.gz")
    write_seg_nrrd(cta.with_array(mask), tmp_path / "data" / "good" / "clot.seg.nrrd")
    _labelmap(tmp_path / "data" / "bad" / "Segmentation.seg.nrrd", mask + (mask > 9), cta,
              {1: "Segment_1", 2: "Segment_2"})
    index = discover(tmp_path / "data")
    assert index["good"].mask.name == "clot.seg.nrrd"
    np.testing.assert_array_equal(index["good"].load().mask.array, mask)
    assert index["bad"].mask.name == "Segmentation.seg.nrrd"
    csv = tmp_path / "problems.csv"
    assert main(["check", str(tmp_path / "data"), "--csv", str(csv)]) == 1
    text = csv.read_text()
    assert "Segmentation.seg.nrrd" in text and "none is named 'clot'" in text
    assert "good" not in text.replace("good/", "")  # the good case has no problem


def test_gzip_body_is_real_gzip(tmp_path):
    like = make_volume(DIRECTIONS["identity"])
    path = write_seg_nrrd(like.with_array(np.ones(like.shape, np.uint8)), tmp_path / "g.seg.nrrd")
    raw = Path(path).read_bytes()
    body = gzip.decompress(raw[raw.index(b"\n\n") + 2:])
    assert len(body) == int(np.prod(like.shape))
