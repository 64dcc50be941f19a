"""DICOM Segmentation (DICOM-SEG) output with highdicom (optional: ``pip install
clotseg[dicom]``).

The SEG references the source CTA series: one frame per CTA slice, each frame on the
plane, position and pixel grid of its source slice, so PACS viewers overlay it on the
CTA they have. The clot mask lives on the volume clotseg read; for an axial, flipped or
oblique series that is the slices' own grid, but a gantry-tilted series was regularised
onto a wider rectangular grid (:mod:`clotseg.io.dicom`). The mask is therefore sampled
back at the physical centre of every source pixel (nearest voxel): exact for untilted
series, and each acquired pixel gets the label of the voxel it lies in for tilted ones.
This mapping is written here because highdicom expects frames on the source slices.

One segment, "clot", coded with SNOMED CT: category *Morphologically abnormal structure*
(49755003), type *Thrombus* (396339007), anatomic region *Cerebral artery* (88556005).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path
from clotseg.io.volume import Volume

INSTALL_HINT = "DICOM-SEG output needs highdicom: pip install 'clotseg[dicom]'"


def highdicom_available() -> bool:
    """True when highdicom can be imported."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def cta_series_files(folder: Path, series_uid: str | None = None) -> list[Path]:
    """Files of the CTA series in a DICOM folder, chosen as reading does (by UID, the only
    series, or the one described as CTA)."""
    from clotseg.io.dicom import find_series, select_series

    return list(select_series(folder, find_series(folder), series_uid, "cta").files)


def _read_sources(files: list[Path]) -> list:
    """Headers of the source slices (no pixel data), sorted along the slice normal."""
    import pydicom

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    _complete(sources)
    iop = np.asarray([float(v) for v in sources[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    sources.sort(key=lambda ds: float(
        np.asarray([float(v) for v in ds.ImagePositionPatient]) @ normal))
    if any(not str(ds.get("SliceThickness", "") or "").strip() for ds in sources):
        # Type 2 and often empty; the SEG's pixel measures need a value: the slice gap.
        heights = [float(np.asarray([float(v) for v in ds.ImagePositionPatient]) @ normal)
                   for ds in sources]
        gap = float(np.median(np.diff(heights))) if len(heights) > 1 else 1.0
        for ds in sources:
            if not str(ds.get("SliceThickness", "") or "").strip():
                ds.SliceThickness = f"{gap:.6g}"
    return sources


#: Type 2 attributes (present, may be empty) that a SEG copies from its source images;
#: anonymised exports sometimes drop them altogether.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID",
          "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName")


def _complete(sources: list) -> None:
    """Give the in-memory source headers the attributes highdicom copies into the SEG:
    empty Type 2 patient/study attributes, and one frame of reference for the whole series
    when the files have none (the slices' geometry is what places the frames)."""
    from pydicom.uid import generate_uid

    frame_of_reference = next((str(ds.FrameOfReferenceUID) for ds in sources
                               if "FrameOfReferenceUID" in ds), None) or generate_uid()
    for ds in sources:
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if "FrameOfReferenceUID" not in ds:
            ds.FrameOfReferenceUID = frame_of_reference


def mask_on_slice(mask: Volume, ds) -> np.ndarray:
    """The mask sampled at the centre of every pixel of one source slice (nearest voxel;
    0 outside the mask's grid): a ``(Rows, Columns)`` uint8 frame."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    grid = mask.grid
    to_index = np.linalg.inv(grid.affine[:3, :3])
    start = grid.physical_to_index(ipp)[0]
    step_col = to_index @ (iop[:3] * col_spacing)  # one column to the right
    step_row = to_index @ (iop[3:] * row_spacing)  # one row down
    rows, cols = int(ds.Rows), int(ds.Columns)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    idx = np.rint(start + r[..., None] * step_row + c[..., None] * step_col).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=-1)
    frame = np.zeros((rows, cols), dtype=np.uint8)
    hit = idx[inside]
    frame[inside] = np.asarray(mask.array)[hit[:, 0], hit[:, 1], hit[:, 2]] > 0
    return frame


def write_dicom_seg(mask: Volume, cta_files: list[Path], path: str | Path, *,
                    series_description: str = "clotseg clot") -> Path:
    """Write ``mask`` (anything > 0 is clot) as a DICOM-SEG of the CTA series made of
    ``cta_files``, atomically."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise ClotsegError(INSTALL_HINT) from None
    from clotseg import __version__

    if not cta_files:
        raise ClotsegError(f"{path}: no CTA DICOM files to reference")
    sources = _read_sources(list(cta_files))
    frames = np.stack([mask_on_slice(mask, ds) for ds in sources])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="clotseg", version=__version__, family=codes.DCM.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="clot",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Thrombus,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.CerebralArtery])
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="clotseg",
        manufacturer_model_name="clotseg", software_versions=__version__,
        device_serial_number="0", series_description=series_description,
        omit_empty_frames=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
