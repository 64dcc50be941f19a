"""DICOM series reading: HU, geometry, gantry tilt, series choice and clean errors.

Series are written here with pydicom from known volumes, so HU values and physical
positions can be checked exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from clotseg.errors import VolumeReadError
from clotseg.io import read_volume
from clotseg.io.dicom import find_series, guess_kind, list_series, read_dicom_series
from tests.helpers import rotation


def write_series(folder: Path, stored: np.ndarray, *, spacing=(0.7, 0.8, 2.0),
                 origin=(-30.0, -20.0, 10.0), direction=None, shear=(0.0, 0.0, 0.0),
                 slope=1.0, intercept=-1024.0, modality="CT", description="CTA head",
                 series_uid=None, tilt_deg=0.0, skip=(), shuffle=True) -> str:
    """Write ``stored`` (int16/uint16, [i, j, k]) as one slice file per k.

    Slice k sits at ``origin + k * (dz * n + shear)``: ``shear`` (mm, in the slice plane)
    models a gantry-tilted acquisition. Returns the series UID.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    d = np.eye(3) if direction is None else np.asarray(direction, float)
    r, c, n = d[:, 0], d[:, 1], d[:, 2]
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    nk = stored.shape[2]
    order = np.random.default_rng(0).permutation(nk) if shuffle else np.arange(nk)
    for k in order:
        if k in skip:
            continue
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality, description, 3
        ds.InstanceNumber = int(k) + 1
        pos = np.asarray(origin) + k * (spacing[2] * n + np.asarray(shear))
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*r, *c)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row, column spacing
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.GantryDetectorTilt = f"{tilt_deg:.3f}"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(folder / f"IM{int(k) * 7919 % 1000:04d}_{k}.dcm", enforce_file_format=True)
    return series_uid


def _volume(shape=(24, 20, 9), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2000, size=shape).astype(np.uint16)


@pytest.mark.parametrize("dname", ["identity", "oblique"])
def test_series_round_trip_keeps_hu_and_geometry(tmp_path, dname):
    d = np.eye(3) if dname == "identity" else rotation("z", 20) @ rotation("x", -12)
    stored = _volume()
    write_series(tmp_path / "s", stored, direction=d)
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, stored.astype(np.int32) - 1024)
    assert vol.array.dtype == np.int16
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 2.0), atol=1e-3)
    np.testing.assert_allclose(vol.origin, (-30.0, -20.0, 10.0), atol=1e-3)
    np.testing.assert_allclose(vol.direction_matrix, d, atol=1e-4)


def test_agrees_with_simpleitk_gdcm_reader(tmp_path):
    import SimpleITK as sitk

    d = rotation("y", 8) @ np.diag([-1.0, -1.0, 1.0])
    write_series(tmp_path / "s", _volume(seed=3), direction=d, slope=1.0, intercept=-1000)
    vol = read_dicom_series(tmp_path / "s")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    ref = reader.Execute()
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(vol.direction, ref.GetDirection(), atol=1e-4)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    stored = _volume(seed=1)
    write_series(tmp_path / "s", stored, slope=2.0, intercept=-1000)
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, stored.astype(np.int32) * 2 - 1000)
    write_series(tmp_path / "f", stored, slope=0.5, intercept=-1024)
    vol = read_dicom_series(tmp_path / "f")
    assert vol.array.dtype == np.float32  # half-HU values are kept, not truncated
    np.testing.assert_allclose(vol.array, stored * 0.5 - 1024)


def _blob(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    d2 = np.sum((points - centre) ** 2, axis=-1)
    return 1000.0 * np.exp(-d2 / (2 * 3.0**2))


@pytest.mark.parametrize("tilt_deg", [15.0, -22.0])
def test_gantry_tilt_is_regularised_to_true_positions(tmp_path, tilt_deg):
    """Slices of a tilted acquisition sample a known blob at their true positions; the
    regularised volume must show the blob where it physically is."""
    spacing, origin = (0.9, 0.9, 2.0), np.array([-20.0, -25.0, -10.0])
    shape = (44, 50, 16)
    shear = np.array([0.0, spacing[2] * np.tan(np.radians(tilt_deg)), 0.0])  # along rows
    centre = np.array([1.5, -2.0, 5.3])
    idx = np.indices(shape).reshape(3, -1).T.astype(float)
    pts = origin + idx[:, :2] * spacing[:2] @ np.eye(3)[:2] + idx[:, 2:3] * (
        spacing[2] * np.array([0, 0, 1.0]) + shear)
    stored = np.round(_blob(pts, centre)).astype(np.int16).reshape(shape)
    write_series(tmp_path / "t", stored, spacing=spacing, origin=tuple(origin), shear=shear,
                 intercept=0, tilt_deg=tilt_deg)
    vol = read_dicom_series(tmp_path / "t")
    np.testing.assert_allclose(vol.direction_matrix, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(vol.spacing, spacing, atol=1e-3)
    assert vol.shape[1] > shape[1]  # widened to hold the sheared slices
    grid = vol.grid
    a = np.asarray(vol.array, float)
    w = np.where(a > 100, a, 0)
    centroid = grid.index_to_physical((np.argwhere(w > 0) * w[w > 0][:, None]).sum(0)
                                      / w.sum())[0]
    np.testing.assert_allclose(centroid, centre, atol=0.15)
    # Every voxel holds the blob's value at its own physical position (linear
    # interpolation error only), including far from the first slice.
    all_pts = grid.index_to_physical(np.indices(vol.shape).reshape(3, -1).T)
    truth = _blob(all_pts, centre).reshape(vol.shape)
    inside = truth > 50
    assert np.max(np.abs(a[inside] - truth[inside])) < 60
    # The test is sensitive: ignoring the tilt would misplace the blob by millimetres.
    k_centre = (centre[2] - origin[2]) / spacing[2]
    assert abs(shear[1] * k_centre) > 1.5


def test_oblique_stack_without_tilt_tag_warns_and_regularises(tmp_path):
    stored = _volume(shape=(16, 16, 6), seed=2).astype(np.int16)
    write_series(tmp_path / "t", stored, shear=(0.0, 0.4, 0.0), intercept=0)
    with pytest.warns(UserWarning, match="obliquely"):
        vol = read_dicom_series(tmp_path / "t")
    assert vol.shape[1] == 16 + 3  # 5 steps of 0.4 mm = 2 mm = 2.5 rows of 0.8 mm, rounded up


def test_missing_middle_slice_is_a_clean_error(tmp_path):
    write_series(tmp_path / "s", _volume(), skip=(4,))
    with pytest.raises(VolumeReadError, match="missing slice"):
        read_dicom_series(tmp_path / "s")


def test_duplicate_slice_positions_are_an_error(tmp_path):
    stored = _volume()
    uid = write_series(tmp_path / "s", stored)
    write_series(tmp_path / "s" / "again", stored, series_uid=uid)
    with pytest.raises(VolumeReadError, match="share a position"):
        read_dicom_series(tmp_path / "s")


def test_mr_series_is_refused(tmp_path):
    write_series(tmp_path / "mr", _volume(), modality="MR", description="T1 MPRAGE")
    with pytest.raises(VolumeReadError, match="modality 'MR'.*needs CT"):
        read_dicom_series(tmp_path / "mr")


def test_pydicom_mr_test_file_is_refused(tmp_path):
    from pydicom.data import get_testdata_file

    (tmp_path / "m").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "m" / "a.dcm")
    with pytest.raises(VolumeReadError, match="modality 'MR'"):
        read_volume(tmp_path / "m")


def test_pydicom_ct_small_single_slice_and_small_series(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = get_testdata_file("CT_small.dcm")
    (tmp_path / "one").mkdir()
    shutil.copy(src, tmp_path / "one" / "ct.dcm")
    with pytest.raises(VolumeReadError, match="only 1 slice"):
        read_dicom_series(tmp_path / "one")
    ds = pydicom.dcmread(src)
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    (tmp_path / "ser").mkdir()
    for k in range(4):
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp + k * 5.0 * normal]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(tmp_path / "ser" / f"{k}.dcm")
    vol = read_dicom_series(tmp_path / "ser")
    ref = pydicom.dcmread(src)
    hu = ref.pixel_array.T * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
    assert vol.shape == (*hu.shape, 4)
    for k in range(4):
        np.testing.assert_array_equal(vol.array[:, :, k], hu)
    np.testing.assert_allclose(vol.spacing[2], 5.0, atol=1e-3)
    np.testing.assert_allclose(vol.origin, ipp, atol=1e-3)


def test_folder_without_dicom_is_a_clean_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    with pytest.raises(VolumeReadError, match="no DICOM files"):
        read_dicom_series(tmp_path / "d")


def test_several_series_chosen_by_description_or_uid(tmp_path):
    folder = tmp_path / "study"
    cta_uid = write_series(folder / "a", _volume(seed=4), description="CTA Willis 0.6 mm")
    ncct_uid = write_series(folder / "b", _volume(seed=5), description="Head plain 5mm")
    series = find_series(folder)
    assert {s.uid for s in series} == {cta_uid, ncct_uid} == set(list_series(folder))
    assert {s.uid: s.kind for s in series} == {cta_uid: "cta", ncct_uid: "ncct"}
    assert all(s.n_files == 9 and s.modality == "CT" for s in series)
    with pytest.raises(VolumeReadError, match="2 DICOM series"):
        read_dicom_series(folder)
    cta = read_dicom_series(folder, kind="cta")
    np.testing.assert_array_equal(cta.array, _volume(seed=4).astype(np.int32) - 1024)
    ncct = read_dicom_series(folder, series_uid=ncct_uid)
    np.testing.assert_array_equal(ncct.array, _volume(seed=5).astype(np.int32) - 1024)
    with pytest.raises(VolumeReadError, match="no DICOM series with UID"):
        read_dicom_series(folder, series_uid="1.2.3")
    # A folder named after the modality picks its series.
    shutil.copytree(folder, tmp_path / "case" / "ncct")
    vol = read_volume(tmp_path / "case" / "ncct")
    np.testing.assert_array_equal(vol.array, ncct.array)


def test_guess_kind():
    assert guess_kind("CTA COW 0.6 Hv36") == "cta"
    assert guess_kind("CT Head w/o contrast") == "ncct"
    assert guess_kind("Angio Carotid") == "cta"
    assert guess_kind("Non-contrast head") == "ncct"
    assert guess_kind("Dose report") is None


def test_case_folder_with_dicom_modalities(tmp_path):
    from clotseg.io.layouts import discover

    case = tmp_path / "data" / "p1"
    write_series(case / "cta", _volume(seed=6), description="CTA")
    write_series(case / "ncct", _volume(seed=7), description="NCCT")
    index = discover(tmp_path / "data")
    vols = index["p1"].load()
    assert vols.cta.grid.same_as(vols.ncct.grid)
    np.testing.assert_array_equal(vols.ncct.array, _volume(seed=7).astype(np.int32) - 1024)


def test_scanner_export_without_modality_folder_names(tmp_path):
    """A PACS-style export (patient/study/series folders with scanner names): one patient
    is one case, several patients one case each, CTA and NCCT told apart by description;
    `check` reads it."""
    from clotseg.cli import main
    from clotseg.io.layouts import discover
    from clotseg.io.volume import Volume
    from tests.inference.conftest import write_dicom_series

    def hu(seed):  # values a CT can hold: stored 0-2000 with the usual -1024 intercept
        return _volume(seed=seed).astype(np.int16) - 1024

    def vol(seed):
        return Volume(hu(seed), (0.5, 0.5, 1.0), (-5.0, 3.0, 7.0), tuple(np.eye(3).ravel()))

    root = tmp_path / "export"
    for n, pid in enumerate(("PAT1", "PAT2")):
        study = root / pid / "1.2.840.99.1"
        write_dicom_series(study / "SE0002", vol(10 * n + 2), "Head w/o contrast", pid)
        write_dicom_series(study / "SE0001", vol(10 * n + 1), "CTA COW 0.6 Hv36", pid)
    index = discover(root)
    assert index.layout == "dicom" and [c.case_id for c in index.cases] == ["PAT1", "PAT2"]
    loaded = index["PAT2"].load()
    np.testing.assert_array_equal(loaded.cta.array, hu(11))
    np.testing.assert_array_equal(loaded.ncct.array, hu(12))
    assert loaded.cta.grid.same_as(vol(11).grid)
    one = discover(root / "PAT1")
    assert one.layout == "dicom" and [c.case_id for c in one.cases] == ["PAT1"]
    assert main(["check", str(root / "PAT1")]) == 0


def test_a_series_above_the_size_limit_is_refused_before_stacking(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    write_series(folder, _volume())  # 24 x 20 x 9 int16: 8640 bytes
    monkeypatch.setenv("CLOTSEG_MAX_VOLUME_GB", str(8000 / (1 << 30)))
    with pytest.raises(VolumeReadError, match=r"24x20x9 voxels .* above the limit"):
        read_dicom_series(folder)
    monkeypatch.setenv("CLOTSEG_MAX_VOLUME_GB", str(9000 / (1 << 30)))
    assert read_dicom_series(folder).shape == (24, 20, 9)


def test_slices_are_read_with_their_pixel_data_deferred(tmp_path, monkeypatch):
    import pydicom

    folder = tmp_path / "s"
    write_series(folder, _volume())
    seen = []
    real = pydicom.dcmread

    def spy(path, *args, **kwargs):
        seen.append(kwargs.get("defer_size"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    vol = read_dicom_series(folder)
    assert vol.shape == (24, 20, 9) and seen and all(d is not None for d in seen[-9:])
