"""DICOM series reading (read only) through SimpleITK's GDCM series reader.

HU rescale (RescaleSlope/Intercept) is applied by GDCM. Geometry comes from the image
position/orientation of each slice; SimpleITK warns and we refuse on non-uniform slice
spacing instead of silently producing a distorted volume.
"""

from __future__ import annotations

from pathlib import Path

from clotseg.errors import VolumeReadError
from clotseg.io.volume import Volume


def list_series(folder: str | Path) -> list[str]:
    """DICOM series instance UIDs found directly in ``folder`` (empty if none)."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from ``folder`` as a :class:`Volume` in HU."""
    import SimpleITK as sitk

    folder = Path(folder)
    uids = list_series(folder)
    if not uids:
        raise VolumeReadError(folder, "folder holds no DICOM series")
    if series_uid is None:
        if len(uids) > 1:
            raise VolumeReadError(folder, f"folder holds {len(uids)} DICOM series; put each "
                                  "series in its own folder")
        series_uid = uids[0]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if len(files) < 2:
        raise VolumeReadError(folder, f"DICOM series has only {len(files)} slice(s); a 3D "
                              "series needs several")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(folder, f"cannot read DICOM series: {str(exc).splitlines()[-1]}"
                              ) from None
    return Volume.from_sitk(image)
