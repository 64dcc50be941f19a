"""DICOM-SEG output: written with highdicom, read back, and every frame checked to sit on
its source CTA slice (position, orientation, reference) with the right pixels, for axial,
flipped and gantry-tilted series."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from clotseg.io.dicom import read_dicom_series
from clotseg.io.dicom_seg import cta_series_files, write_dicom_seg
from tests.helpers import rotation
from tests.io.test_dicom import write_series

pytest.importorskip("highdicom")

SERIES = {
    "axial": {"direction": np.eye(3)},
    "flipped": {"direction": np.diag([-1.0, -1.0, 1.0])},
    "oblique": {"direction": rotation("z", 20) @ rotation("x", -12)},
    "tilted": {"direction": np.eye(3), "shear": (0.0, 2.0 * np.tan(np.radians(15)), 0.0),
               "tilt_deg": 15.0},
}


def _floats(values) -> np.ndarray:
    return np.asarray([float(v) for v in values])


def _frames_in_patient_space(seg) -> tuple[np.ndarray, list]:
    """LPS centres of all clot pixels of a SEG, and per frame (IPP, referenced UID)."""
    iop = _floats(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                  .ImageOrientationPatient)
    ps = _floats(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    points, frames = [], []
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = _floats(item.PlanePositionSequence[0].ImagePositionPatient)
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        frames.append((ipp, str(ref), pixels[f]))
        r, c = np.nonzero(pixels[f])
        points.append(ipp + c[:, None] * ps[1] * iop[:3] + r[:, None] * ps[0] * iop[3:])
    return np.concatenate(points), frames


@pytest.mark.parametrize("name", list(SERIES))
def test_every_frame_lands_on_its_cta_slice(tmp_path, name):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    stored = np.random.default_rng(1).integers(0, 1500, (26, 22, 10)).astype(np.uint16)
    kw = SERIES[name]
    write_series(tmp_path / "cta", stored, spacing=(0.7, 0.8, 2.0), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cta = read_dicom_series(tmp_path / "cta")
    mask = np.zeros(cta.shape, np.uint8)
    mask[6:12, 7:13, 3:7] = 1
    mask[8:10, 13:15, 4:6] = 1  # asymmetric: a flip would show
    files = cta_series_files(tmp_path / "cta")
    path = write_dicom_seg(cta.with_array(mask), files, tmp_path / "seg.dcm")

    seg = hd.seg.segread(path)
    assert seg.get_segment_numbers(segment_label="clot") == [1]
    desc = seg.get_segment_description(1)
    assert desc.segmented_property_type == codes.SCT.Thrombus
    assert desc.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and int(ds.NumberOfFrames) == stored.shape[2]
    sources = {str(s.SOPInstanceUID): s for s in (pydicom.dcmread(f) for f in files)}
    assert {str(r.SeriesInstanceUID) for r in ds.ReferencedSeriesSequence} == {
        str(next(iter(sources.values())).SeriesInstanceUID)}
    iop = _floats(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                  .ImageOrientationPatient)
    points, frames = _frames_in_patient_space(ds)
    for ipp, ref, pixels in frames:
        src = sources[ref]  # every frame references one source slice ...
        np.testing.assert_allclose(ipp, _floats(src.ImagePositionPatient), atol=1e-3)
        np.testing.assert_allclose(iop, _floats(src.ImageOrientationPatient), atol=1e-6)
        assert pixels.shape == (src.Rows, src.Columns)
        if "shear" not in kw:  # ... and holds exactly the mask's slice there
            k = int(round(float((ipp - np.asarray(cta.origin))
                                @ cta.direction_matrix[:, 2]) / cta.spacing[2]))
            np.testing.assert_array_equal(pixels, mask[:, :, k].T)
    assert len({ref for _, ref, _ in frames}) == len(sources)
    # The clot is where it physically is, with as many pixels as it has voxels.
    assert len(points) == int(mask.sum())
    want = cta.grid.index_to_physical(np.argwhere(mask).mean(0))[0]
    np.testing.assert_allclose(points.mean(0), want, atol=0.4)


def test_empty_mask_still_makes_a_valid_seg(tmp_path):
    stored = np.random.default_rng(2).integers(0, 1500, (16, 14, 5)).astype(np.uint16)
    write_series(tmp_path / "cta", stored)
    cta = read_dicom_series(tmp_path / "cta")
    path = write_dicom_seg(cta.with_array(np.zeros(cta.shape, np.uint8)),
                           cta_series_files(tmp_path / "cta"), tmp_path / "e.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and not ds.pixel_array.any()


def test_cta_files_chosen_by_description(tmp_path):
    stored = np.random.default_rng(3).integers(0, 1500, (16, 14, 5)).astype(np.uint16)
    write_series(tmp_path / "both" / "a", stored, description="CTA COW")
    write_series(tmp_path / "both" / "b", stored, description="Head w/o contrast",
                 origin=(0.0, 0.0, 0.0))
    files = cta_series_files(Path(tmp_path / "both"))
    assert len(files) == 5 and all(f.parent.name == "a" for f in files)
