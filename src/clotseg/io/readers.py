"""Reading and writing volumes with their geometry.

Files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) go through SimpleITK, which converts NIfTI's
RAS to LPS on the way in and out; DICOM series are in :mod:`clotseg.io.dicom`. Everything
returns or takes a :class:`~clotseg.io.volume.Volume`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from clotseg.errors import VolumeReadError
from clotseg.io.atomic import atomic_path
from clotseg.io.volume import Volume

#: File name endings that SimpleITK reads and writes for us.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_suffix(path: str | Path) -> str | None:
    """The recognised volume suffix of a file name, or None."""
    name = Path(path).name.lower()
    for suf in VOLUME_SUFFIXES:
        if name.endswith(suf):
            return suf
    return None


def strip_suffix(path: str | Path) -> str:
    """File name without its volume suffix ("cta.nii.gz" -> "cta")."""
    name = Path(path).name
    suf = volume_suffix(name)
    return name[: -len(suf)] if suf else Path(name).stem


def read_volume(path: str | Path, *, spacing: tuple[float, float, float] | None = None) -> Volume:
    """Read a volume file, a DICOM series folder or an original-layout ``.npy`` array.

    ``spacing`` only applies to ``.npy`` files, which store none (1 mm is assumed otherwise).
    Any failure becomes a :class:`VolumeReadError` naming the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "file or folder does not exist")
    if path.is_dir():
        from clotseg.io.dicom import read_dicom_series

        return read_dicom_series(path)
    if path.suffix.lower() == ".npy":
        return read_npy(path, spacing=spacing)
    if volume_suffix(path) is None:
        raise VolumeReadError(path, f"unsupported file type (expected one of "
                              f"{', '.join(VOLUME_SUFFIXES)}, .npy or a DICOM folder)")
    return _read_sitk(path)


def _read_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    if path.name.lower().endswith(".gz"):
        _check_gzip(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(path, _short_itk_message(exc)) from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise VolumeReadError(path, f"expected a 3D volume, found {image.GetDimension()}D "
                              f"of size {image.GetSize()}")
    try:
        vol = Volume.from_sitk(image)
    except ValueError as exc:
        raise VolumeReadError(path, str(exc)) from None
    if vol.array.dtype.kind == "f" and volume_suffix(path) in (".nii", ".nii.gz"):
        vol = _restore_nifti_nonfinite(path, vol)
    return vol


def _restore_nifti_nonfinite(path: Path, vol: Volume) -> Volume:
    """ITK's NIfTI reader turns NaN voxels into 0, which would hide broken data from
    ``clotseg check``; nibabel keeps them, so float NIfTI voxels are taken from nibabel
    (same [i, j, k] order) when it sees non-finite values."""
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj, dtype=vol.array.dtype)
    if data.shape == vol.shape and not np.isfinite(data).all():
        return vol.with_array(data)
    return vol


def _check_gzip(path: Path) -> None:
    """Fail clearly on truncated or corrupt gzip data.

    Needed although it costs one extra decompression: ITK (SimpleITK 2.x) reads a
    truncated or corrupted ``.nii.gz`` without an error and returns garbage voxels; only a
    full pass checks gzip's CRC and length trailer."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError) as exc:
        raise VolumeReadError(path, f"corrupt or truncated gzip data ({exc})") from None


def _short_itk_message(exc: Exception) -> str:
    """Reduce ITK's multi-line exception text to its informative last line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Description:" in ln:
            return "cannot read: " + ln.split("Description:", 1)[1].strip()
    text = lines[-1] if lines else "unknown error"
    if "Unable to determine ImageIO reader" in str(exc):
        return "not a readable image file (unknown or corrupt format)"
    return "cannot read: " + text[:200]


def read_npy(path: str | Path, *, spacing: tuple[float, float, float] | None = None) -> Volume:
    """Read an original-research-layout array (indexed ``[x, y, slice]``, no geometry).

    The original stored no spacing, origin or orientation; we assume identity direction,
    zero origin and ``spacing`` (1 mm isotropic when not given).
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise VolumeReadError(path, f"not a readable .npy array ({exc})") from None
    if arr.ndim != 3:
        raise VolumeReadError(path, f"expected a 3D array, found shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise VolumeReadError(path, f"unsupported array type {arr.dtype}")
    return Volume(np.asarray(arr), spacing or (1.0, 1.0, 1.0))


def write_volume(volume: Volume, path: str | Path, *, mask: bool = False,
                 compress: bool = True) -> Path:
    """Write a volume atomically; the format follows the file name.

    ``mask=True`` stores uint8 (0/1 labels). ``.npy`` is accepted for the original layout
    but loses the geometry.
    """
    import SimpleITK as sitk

    path = Path(path)
    vol = volume
    if mask:
        vol = volume.with_array(np.asarray(volume.array).astype(np.uint8))
    if path.suffix.lower() == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(vol.array))
        return path
    if volume_suffix(path) is None:
        raise ValueError(f"{path}: unsupported output format")
    arr = np.asarray(vol.array)
    if arr.dtype == np.float64:
        vol = vol.with_array(arr.astype(np.float32))
    elif arr.dtype == bool:
        vol = vol.with_array(arr.astype(np.uint8))
    with atomic_path(path) as tmp:
        sitk.WriteImage(vol.to_sitk(), str(tmp), useCompression=compress)
    return path
