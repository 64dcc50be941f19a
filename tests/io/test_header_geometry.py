"""Where a header puts the image: NIfTI's two transforms read exactly, and a header that
leaves the place or the voxel size open (two NIfTI geometries or none, a NRRD or MetaImage
file without spacing or orientation) is stated or refused, never read as a silent guess."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from clotseg.errors import VolumeReadError
from clotseg.io.readers import (
    _nifti_header,
    nifti_transform_note,
    qform_affine,
    read_volume,
    sform_affine,
    write_volume,
)
from clotseg.io.volume import Volume

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _affine(seed: int, flip: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.eye(4)
    rot = Rotation.random(random_state=seed).as_matrix()
    if flip:  # a left-handed voxel grid: qfac -1 in the qform
        rot = rot @ np.diag([1.0, 1.0, -1.0])
    a[:3, :3] = rot * np.array([0.45, 0.45, 1.25])
    a[:3, 3] = rng.uniform(-120, 120, 3)
    return a


def _write(path: Path, qform: np.ndarray | None, sform: np.ndarray | None, cls=nib.Nifti1Image,
           shape=(12, 10, 8)) -> Path:
    data = np.full(shape, 40, np.int16)
    data[3:6, 2:5, 1:4] = 300
    img = cls(data, qform if qform is not None else sform)
    img.set_qform(qform, code=1 if qform is not None else 0)
    img.set_sform(sform, code=1 if sform is not None else 0)
    nib.save(img, str(path))
    return path


def _read(path: Path) -> tuple[Volume, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path)
    return vol, [str(w.message) for w in caught]


@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("seed,flip", [(0, False), (1, True), (2, False), (3, True)])
def test_both_transforms_are_read_as_nibabel_reads_them(tmp_path, cls, seed, flip):
    q, s = _affine(seed, flip), _affine(seed + 10, not flip)
    path = _write(tmp_path / "v.nii.gz", q, s, cls)
    hdr, ref = _nifti_header(path), nib.load(str(path)).header
    assert np.allclose(qform_affine(hdr), ref.get_qform(), atol=1e-3)
    assert np.allclose(sform_affine(hdr), ref.get_sform(), atol=1e-4)


@pytest.mark.parametrize("shift", [(0.0, 0.0, 9.0), (30.0, -4.0, 0.0)])
def test_a_header_with_two_geometries_is_stated_with_the_one_read(tmp_path, shift):
    q = _affine(5, False)
    s = q.copy()
    s[:3, 3] += shift
    path = _write(tmp_path / "cta.nii.gz", q, s)
    vol, said = _read(path)
    assert len(said) == 1, said
    assert str(path) in said[0] and "qform" in said[0] and "sform" in said[0]
    assert f"{np.linalg.norm(shift):.1f} mm apart" in said[0]
    read = RAS_FROM_LPS @ vol.affine
    named = "qform" if "Read with the qform" in said[0] else "sform"
    assert f"Read with the {named}" in said[0]
    assert np.allclose(read, q if named == "qform" else s, atol=1e-3)


def test_a_header_without_orientation_is_stated(tmp_path):
    vol, said = _read(_write(tmp_path / "ncct.nii.gz", None, None))
    assert len(said) == 1 and "no orientation" in said[0] and "ncct.nii.gz" in said[0], said
    assert vol.origin == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("which", ["qform", "sform"])
def test_one_transform_or_two_that_agree_read_in_silence(tmp_path, which):
    a = _affine(7, True)
    _, said = _read(_write(tmp_path / "a.nii.gz", a if which == "qform" else None,
                           a if which == "sform" else None))
    assert said == []
    close = a.copy()
    close[:3, :] += 1e-4  # float rounding between the two, far below half a voxel
    _, said = _read(_write(tmp_path / "b.nii.gz", a, close))
    assert said == []


def test_files_clotseg_writes_read_in_silence(tmp_path):
    direction = Rotation.from_euler("xyz", [12, -20, 33], degrees=True).as_matrix()
    vol = Volume(np.zeros((9, 8, 7), np.int16), (0.4, 0.4, 0.6), (10.0, -5.0, 3.0),
                 tuple((direction @ np.diag([1, 1, -1])).ravel()))
    write_volume(vol, tmp_path / "m.nii.gz")
    back, said = _read(tmp_path / "m.nii.gz")
    assert said == []
    assert back.grid.same_as(vol.grid)


def test_the_note_is_none_for_a_consistent_header(tmp_path):
    a = _affine(9, False)
    path = _write(tmp_path / "c.nii.gz", a, a)
    assert nifti_transform_note(_nifti_header(path), read_volume(path)) is None


VOXELS = np.arange(6 * 5 * 4, dtype=np.int16).reshape(4, 5, 6) * 10 - 500  # z, y, x


def _nrrd(path: Path, *fields: str) -> Path:
    head = ["NRRD0004", "type: short", "dimension: 3", "sizes: 6 5 4", *fields,
            "encoding: raw", "endian: little"]
    path.write_bytes(("\n".join(head) + "\n\n").encode() + VOXELS.tobytes())
    return path


def _mha(path: Path, *fields: str) -> Path:
    head = ["ObjectType = Image", "NDims = 3", "BinaryData = True",
            "BinaryDataByteOrderMSB = False", *fields, "DimSize = 6 5 4",
            "ElementType = MET_SHORT", "ElementDataFile = LOCAL"]
    path.write_bytes(("\n".join(head) + "\n").encode() + VOXELS.tobytes())
    return path


@pytest.mark.parametrize("make", [
    lambda d: _nrrd(d / "cta.nrrd"),
    lambda d: _nrrd(d / "cta.nrrd", "kinds: domain domain domain"),
    lambda d: _mha(d / "cta.mha", "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0"),
])
def test_a_header_without_spacing_is_refused_not_read_as_1_mm(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(VolumeReadError, match="no voxel spacing") as exc:
        read_volume(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("make,spacing", [
    (lambda d: _nrrd(d / "ncct.nrrd", "spacings: 0.5 0.5 2"), (0.5, 0.5, 2.0)),
    (lambda d: _mha(d / "ncct.mha", "ElementSpacing = 0.5 0.5 2"), (0.5, 0.5, 2.0)),
])
def test_a_header_with_spacing_but_no_orientation_is_stated(tmp_path, make, spacing):
    vol, said = _read(make(tmp_path))
    assert vol.spacing == spacing
    assert len(said) == 1 and "no orientation" in said[0] and "ncct." in said[0], said
    assert np.array_equal(np.asarray(vol.array)[:, :, 0], VOXELS[0].T)  # voxels as stored


def test_a_complete_nrrd_header_reads_in_silence(tmp_path):
    path = _nrrd(tmp_path / "a.nrrd", "space: left-posterior-superior",
                 "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)", "space origin: (1,2,3)")
    vol, said = _read(path)
    assert said == [] and vol.spacing == (0.5, 0.5, 2.0) and vol.origin == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("name", ["v.nrrd", "v.nhdr", "v.mha", "v.mhd"])
def test_files_clotseg_writes_in_other_formats_read_in_silence(tmp_path, name):
    vol = Volume(np.zeros((9, 8, 7), np.int16), (0.4, 0.4, 0.6), (10.0, -5.0, 3.0),
                 (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    write_volume(vol, tmp_path / name)
    back, said = _read(tmp_path / name)
    assert said == [] and back.grid.same_as(vol.grid)


def test_a_volume_larger_than_any_ct_is_refused(tmp_path):
    from clotseg.io.readers import MAX_EXTENT_MM, check_extent

    ok = Volume(np.zeros((100, 100, 10), np.int16), (0.5, 0.5, MAX_EXTENT_MM / 10))
    assert check_extent(tmp_path / "a.nii.gz", ok) is ok
    cm_as_mm = Volume(np.zeros((512, 512, 10), np.int16), (4.5, 4.5, 5.0))  # 0.45 cm
    write_volume(cm_as_mm, tmp_path / "b.nii.gz")
    with pytest.raises(VolumeReadError, match=r"2304 x 2304 x 50 mm, larger than any CT"):
        read_volume(tmp_path / "b.nii.gz")


@pytest.mark.parametrize("name,compress,says", [
    ("cta.nii", True, "holds gzip-compressed NIfTI data but is named .nii: rename it cta.nii.gz"),
    ("cta.nii.gz", False, "holds uncompressed NIfTI data but is named .nii.gz: rename it cta.nii"),
])
def test_a_nifti_named_against_its_compression_says_how_to_rename_it(tmp_path, name,
                                                                     compress, says):
    import gzip

    raw = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)).to_bytes()
    (tmp_path / name).write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(VolumeReadError, match=says):
        read_volume(tmp_path / name)
