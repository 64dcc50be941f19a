"""Round trips through every supported format keep voxels and geometry exactly."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from clotseg.errors import VolumeReadError
from clotseg.io import Volume, read_volume, write_volume
from clotseg.io.orientation import orientation_of
from tests.helpers import DIRECTIONS, make_volume

FORMATS = ["nii.gz", "nii", "nrrd", "mha", "mhd"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dname", sorted(DIRECTIONS))
def test_round_trip_keeps_voxels_and_geometry(tmp_path, fmt, dname):
    vol = make_volume(DIRECTIONS[dname])
    path = write_volume(vol, tmp_path / f"cta.{fmt}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert back.grid.same_as(vol.grid)


@pytest.mark.parametrize("fmt", ["nii.gz", "nrrd"])
def test_mask_written_as_uint8(tmp_path, fmt):
    vol = make_volume(DIRECTIONS["oblique"])
    mask = vol.with_array(vol.array > 40)
    back = read_volume(write_volume(mask, tmp_path / f"clot.{fmt}", mask=True))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array.astype(np.uint8))


def test_physical_point_of_voxel_matches_simpleitk():
    import SimpleITK as sitk

    vol = make_volume(DIRECTIONS["oblique"])
    img = vol.to_sitk()
    for idx in [(0, 0, 0), (3, 5, 2), (10, 8, 6)]:
        expected = img.TransformIndexToPhysicalPoint(idx)
        np.testing.assert_allclose(vol.grid.index_to_physical(np.array(idx))[0], expected,
                                   atol=1e-9)
    # SimpleITK's array is [k, j, i]; ours is [i, j, k].
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(img)[2, 5, 3], vol.array[3, 5, 2])


def test_nifti_on_disk_is_ras_and_agrees_with_nibabel(tmp_path):
    """NIfTI stores RAS: nibabel's affine must be our LPS affine with x and y negated."""
    import nibabel as nib

    vol = make_volume(DIRECTIONS["oblique"])
    path = write_volume(vol, tmp_path / "v.nii.gz")
    img = nib.load(path)
    expected = np.diag([-1, -1, 1, 1]) @ vol.affine
    np.testing.assert_allclose(img.affine, expected, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol.array)


@pytest.mark.parametrize("dname", sorted(DIRECTIONS))
def test_orientation_round_trip_and_axial_last(dname):
    vol = make_volume(DIRECTIONS[dname])
    orient = orientation_of(vol.grid)
    canon = orient.to_canonical(vol.array)
    np.testing.assert_array_equal(orient.from_canonical(canon), vol.array)
    # The canonical last axis is the one closest to superior (+z in LPS).
    k_axis = orient.perm[2]
    assert k_axis == vol.grid.axial_axis()
    assert np.sign(vol.direction_matrix[2, k_axis]) == (-1 if orient.flip[2] else 1)


def test_npy_has_no_geometry_and_uses_given_spacing(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", arr)
    vol = read_volume(tmp_path / "a.npy", spacing=(0.5, 0.5, 2.0))
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.spacing == (0.5, 0.5, 2.0)


def test_corrupt_files_give_clear_errors(tmp_path):
    vol = make_volume(np.eye(3))
    good = write_volume(vol, tmp_path / "good.nii.gz")
    data = good.read_bytes()
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "text.nii.gz"
    text.write_text("this is not an image\n")
    plain_text = tmp_path / "plain.nii"
    plain_text.write_text("not an image either\n")
    nrrd = write_volume(vol, tmp_path / "v.nrrd", compress=False)
    trunc_nrrd = tmp_path / "trunc.nrrd"
    trunc_nrrd.write_bytes(nrrd.read_bytes()[:400])
    for path in (truncated, text, plain_text, trunc_nrrd, tmp_path / "missing.nii.gz",
                 tmp_path / "x.png"):
        if path.suffix == ".png":
            path.write_bytes(b"\x89PNG")
        with pytest.raises(VolumeReadError) as info:
            read_volume(path)
        assert str(path) in str(info.value)
    assert "gzip" in str(_err(truncated)) and "gzip" in str(_err(text))


def _err(path):
    try:
        read_volume(path)
    except VolumeReadError as exc:
        return exc
    raise AssertionError(f"{path} read without error")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    import SimpleITK as sitk

    vol = make_volume(np.eye(3))
    path = write_volume(vol, tmp_path / "cta.nii.gz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(RuntimeError):
        write_volume(vol.with_array(vol.array + 1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cta.nii.gz"]
    with gzip.open(path) as fh:
        assert fh.read(4)


def test_volume_rejects_bad_input():
    with pytest.raises(ValueError):
        Volume(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        Volume(np.zeros((3, 3, 3)), spacing=(1, 0, 1))


def _raw_nrrd(path, directions: str) -> None:
    """A 4x4x3 int16 NRRD whose header has the given ``space directions``."""
    data = np.arange(48, dtype="<i2")
    header = ("NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: 4 4 3\nspace directions: {directions}\nkinds: domain domain domain\n"
              "endian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + data.tobytes())


@pytest.mark.parametrize("directions, reason", [
    ("(0.6,0,0) (0.6,0,0) (0,0,1)", "axis directions are degenerate"),
    ("(0,0,0) (0,0.6,0) (0,0,1)", "zero or negative"),
])
def test_degenerate_nrrd_geometry_is_named(tmp_path, directions, reason):
    path = tmp_path / "ncct.nrrd"
    _raw_nrrd(path, directions)
    with pytest.raises(VolumeReadError, match=reason) as info:
        read_volume(path)
    assert str(path) in str(info.value)
