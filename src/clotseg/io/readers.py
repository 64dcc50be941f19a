"""Reading and writing volumes with their geometry.

Files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) go through SimpleITK, which converts NIfTI's
RAS to LPS on the way in and out; DICOM series are in :mod:`clotseg.io.dicom`. Everything
returns or takes a :class:`~clotseg.io.volume.Volume`.
"""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, VolumeReadError
from clotseg.io.atomic import atomic_path
from clotseg.io.limits import (  # noqa: F401  (also importable from here)
    DEFAULT_MAX_VOLUME_BYTES,
    MAX_EXTENT_MM,
    check_extent,
    check_size,
    max_volume_bytes,
    size_text,
)
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

        return read_dicom_series(path)  # extent checked there, for every DICOM reader
    if path.suffix.lower() == ".npy":
        return check_extent(path, read_npy(path, spacing=spacing))
    if volume_suffix(path) is None:
        raise VolumeReadError(path, f"unsupported file type (expected one of "
                              f"{', '.join(VOLUME_SUFFIXES)}, .npy or a DICOM folder)")
    return check_extent(path, _read_sitk(path))


#: Extra decompressed bytes tolerated after the voxel data a NIfTI header describes,
#: before a gzip stream counts as a decompression bomb and reading stops.
GZIP_SLACK_BYTES = 16 << 20


def _read_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    gz = path.name.lower().endswith(".gz")
    header = None
    if volume_suffix(path) in (".nii", ".nii.gz"):
        header = _check_nifti(path)  # header sane, payload complete, size within the cap
    else:
        note = _check_itk_header(path)
        if note:
            warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
        if gz:
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
    del image
    if header is not None:
        note = nifti_transform_note(header, vol)
        if note:
            warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
    if vol.array.dtype.kind == "f" and volume_suffix(path) in (".nii", ".nii.gz"):
        vol = _restore_nifti_nonfinite(path, vol)
    return vol


#: Header fields (lower case) that give a NRRD or MetaImage file its voxel spacing, and
#: those that give its orientation. Without them ITK reads 1 mm voxels along the patient's
#: axes, in silence.
_SPACING_FIELDS = {"nrrd": ("space directions", "spacings"),
                   "meta": ("elementspacing", "elementsize")}
_ORIENTATION_FIELDS = {"nrrd": ("space directions",),
                       "meta": ("transformmatrix", "rotation", "orientation")}
#: How much of a file is searched for the end of a NRRD or MetaImage text header.
_TEXT_HEADER_BYTES = 1 << 16


def _text_header(path: Path) -> tuple[str, dict[str, str]] | None:
    """``(kind, fields)`` of a NRRD (``key: value``) or MetaImage (``Key = Value``) text
    header, keys in lower case; None for a gzip-compressed file or no such header. Read
    here because ITK does not say which geometry fields a file actually had."""
    kind = "nrrd" if volume_suffix(path) in (".nrrd", ".nhdr") else "meta"
    if path.name.lower().endswith(".gz"):
        return None
    with open(path, "rb") as fh:
        raw = fh.read(_TEXT_HEADER_BYTES)
    fields: dict[str, str] = {}
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        text = line.decode("latin-1").strip()
        if kind == "nrrd" and not text and fields:
            break  # the blank line that ends a NRRD header
        if not text or text.startswith("#") or (kind == "nrrd" and ":=" in text):
            continue  # comments and NRRD key/value pairs, not fields
        key, sep, value = text.partition(":" if kind == "nrrd" else "=")
        if sep:
            fields[key.strip().lower()] = value.strip()
        if kind == "meta" and key.strip().lower() == "elementdatafile":
            break  # the voxels follow
    return (kind, fields) if fields else None


def orientation_known(path: str | Path) -> bool:
    """Whether ``path`` says how its array lies in the patient: a DICOM series always does
    (ImageOrientationPatient is required), an original-layout ``.npy`` never, a NIfTI when
    its qform or sform is valid, a NRRD or MetaImage when it has an orientation field.
    Where it does not, left and right are not named (``clots.csv`` ``side``). A header
    that cannot be read counts as known: reading it reports the problem."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() == ".npy":
        return False
    try:
        if volume_suffix(path) in (".nii", ".nii.gz"):
            hdr = _nifti_header(path)
            return hdr.qform_code > 0 or hdr.sform_code > 0
        header = _text_header(path) if volume_suffix(path) else None
    except (OSError, ClotsegError):
        return True
    if header is None:
        return True
    kind, fields = header
    return any(k in fields for k in _ORIENTATION_FIELDS[kind])


def _check_itk_header(path: Path) -> str | None:
    """Size cap and geometry fields for the formats read through ITK alone (NRRD,
    MetaImage), from the header: no spacing is an error (ITK would assume 1 mm), no
    orientation a note, returned for the caller to warn about."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if path.name.lower().endswith(".gz"):
            _check_gzip(path)
        raise VolumeReadError(path, _short_itk_message(exc)) from None
    item = sitk.Image([1] * 2, reader.GetPixelID()).GetSizeOfPixelComponent()
    check_size(path, reader.GetSize(), item * reader.GetNumberOfComponents())
    if any(s <= 0 for s in reader.GetSpacing()):
        raise VolumeReadError(path, f"voxel spacing {reader.GetSpacing()} in the header is "
                              "zero or negative")
    header = _text_header(path)
    if header is None:
        return None
    kind, fields = header
    if not any(k in fields for k in _SPACING_FIELDS[kind]):
        named = " or ".join(f"'{k}'" for k in _SPACING_FIELDS[kind])
        raise VolumeReadError(path, f"the header gives no voxel spacing (no {named} field): "
                              "ITK would assume 1 mm, the real spacing is unknown")
    if not any(k in fields for k in _ORIENTATION_FIELDS[kind]):
        return ("the header gives no orientation (no "
                f"{' or '.join(repr(k) for k in _ORIENTATION_FIELDS[kind])} field): read with "
                "origin 0 and the array axes taken as the patient's, so left and right are "
                "not named (clots.csv side is empty) and the alignment with the other scan "
                "and the mask rests on that guess; re-export the file from the scanner's "
                "DICOM")
    return None


@dataclass(frozen=True)
class NiftiHeader:
    """The few NIfTI header fields that bound and check a read, exactly as stored."""

    dim: tuple[int, ...]  # dim[0] = number of dimensions, then the sizes
    bitpix: int
    pixdim: tuple[float, float, float]
    vox_offset: int
    sizeof_hdr: int
    # the two voxel-to-world transforms (method 2: qform, method 3: sform) and their codes
    qform_code: int = 0
    sform_code: int = 0
    qfac: float = 1.0  # pixdim[0]: -1 flips the third axis of the qform
    quatern: tuple[float, ...] = (0.0,) * 6  # quatern_b, c, d, qoffset_x, y, z
    srow: tuple[float, ...] = (0.0,) * 12  # srow_x, srow_y, srow_z


#: (offset, dtype) of the fields we need, for NIfTI-1 (348-byte header) and NIfTI-2 (540).
_NIFTI_FIELDS = {
    348: {"dim": (40, "i2", 8), "bitpix": (72, "i2", 1), "pixdim": (76, "f4", 8),
          "vox_offset": (108, "f4", 1), "magic": (344, "S4", 1),
          "qform_code": (252, "i2", 1), "sform_code": (254, "i2", 1),
          "quatern": (256, "f4", 6), "srow": (280, "f4", 12)},
    540: {"dim": (16, "i8", 8), "bitpix": (14, "i2", 1), "pixdim": (104, "f8", 8),
          "vox_offset": (168, "i8", 1), "magic": (4, "S8", 1),
          "qform_code": (344, "i4", 1), "sform_code": (348, "i4", 1),
          "quatern": (352, "f8", 6), "srow": (400, "f8", 12)},
}


def _nifti_header(path: Path) -> NiftiHeader:
    """The NIfTI-1/2 header exactly as stored. Parsed here from the format's fixed field
    offsets rather than with nibabel: nibabel's loader quietly replaces a zero pixdim by
    1 mm (the silent error this check exists to catch), and importing it costs every
    command about 30 MB of memory for four numbers."""
    named_gz = path.name.lower().endswith(".gz")
    with open(path, "rb") as fh:
        is_gz = fh.read(2) == b"\x1f\x8b"  # gzip's magic number
    if is_gz != named_gz and _holds_nifti(path, is_gz):
        right = (path.name[:-3] if named_gz else path.name + ".gz")
        held, named = ("uncompressed", ".nii.gz") if named_gz else ("gzip-compressed", ".nii")
        raise VolumeReadError(path, f"the file holds {held} NIfTI data but is named {named}: "
                              f"rename it {right}")
    opener = gzip.open if named_gz else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(540)
    except (OSError, EOFError) as exc:
        raise VolumeReadError(path, f"corrupt or truncated gzip data ({exc})") from None
    for endian in ("<", ">"):
        if len(raw) < 4:
            break
        size = int(np.frombuffer(raw[:4], f"{endian}i4")[0])
        fields = _NIFTI_FIELDS.get(size)
        if fields is None or len(raw) < size:
            continue
        get = {k: np.frombuffer(raw, f"{endian}{t}" if t[0] != "S" else t, n, off)
               for k, (off, t, n) in fields.items()}
        if bytes(get["magic"][0]).rstrip(b"\0")[:2] not in (b"n+", b"ni"):
            continue
        return NiftiHeader(tuple(int(d) for d in get["dim"]), int(get["bitpix"][0]),
                           tuple(float(v) for v in get["pixdim"][1:4]),
                           int(get["vox_offset"][0]) if np.isfinite(get["vox_offset"][0])
                           else -1, size, int(get["qform_code"][0]),
                           int(get["sform_code"][0]),
                           -1.0 if float(get["pixdim"][0]) < 0 else 1.0,
                           tuple(float(v) for v in get["quatern"]),
                           tuple(float(v) for v in get["srow"]))
    raise VolumeReadError(path, "not a NIfTI file (no valid NIfTI-1/2 header)")


def _holds_nifti(path: Path, gz: bool) -> bool:
    """Whether ``path`` starts with a NIfTI-1/2 header when read (``gz``: decompressed)."""
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            raw = fh.read(8)
    except (OSError, EOFError):
        return False
    return len(raw) >= 4 and any(int(np.frombuffer(raw[:4], f"{e}i4")[0]) in _NIFTI_FIELDS
                                 for e in "<>")


def _check_nifti(path: Path) -> NiftiHeader:
    """Everything about a NIfTI file that can be known before allocating its voxels:
    a 3D scalar volume, positive spacing, a size within the cap, and voxel data as long as
    the header says (a ``.nii`` is checked by file size, a ``.nii.gz`` by one streaming
    pass that also checks the gzip CRC and stops at the cap). Returns the header."""
    hdr = _nifti_header(path)
    ndim = hdr.dim[0]
    if not 1 <= ndim <= 7 or any(d < 0 for d in hdr.dim[1:ndim + 1]):
        raise VolumeReadError(path, f"invalid dimensions in the header (dim = {hdr.dim})")
    shape = list(hdr.dim[1:ndim + 1])
    if ndim < 3 or any(d > 1 for d in shape[3:]):
        raise VolumeReadError(path, f"expected a 3D volume, found {ndim}D of size "
                              f"{tuple(shape)}")
    if any(d == 0 for d in shape[:3]):
        raise VolumeReadError(path, f"empty volume (size {tuple(shape[:3])})")
    if hdr.bitpix <= 0 or hdr.bitpix % 8:
        raise VolumeReadError(path, f"invalid bits per voxel in the header ({hdr.bitpix})")
    if not all(np.isfinite(hdr.pixdim)) or any(v <= 0 for v in hdr.pixdim):
        raise VolumeReadError(path, f"voxel spacing (pixdim) {hdr.pixdim} in the header is "
                              "zero, negative or not a number; the real spacing is unknown")
    nbytes = check_size(path, shape, hdr.bitpix // 8)
    offset = hdr.vox_offset if hdr.vox_offset > 0 else hdr.sizeof_hdr + 4
    needed = offset + nbytes
    if path.name.lower().endswith(".gz"):
        have = _check_gzip(path, stop_after=needed + GZIP_SLACK_BYTES)
    else:
        have = path.stat().st_size
    if have < needed:
        raise VolumeReadError(path, f"voxel data cut short: the header describes "
                              f"{'x'.join(map(str, shape[:3]))} voxels ({needed} bytes with "
                              f"the header), the file holds {have} bytes "
                              f"({100 * max(have - offset, 0) / nbytes:.0f} % of the voxels)")
    return hdr


#: NIfTI's RAS world from ITK's LPS (and back: the matrix is its own inverse).
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def qform_affine(hdr: NiftiHeader) -> np.ndarray:
    """4x4 voxel-to-RAS matrix of the header's qform (the NIfTI standard's "method 2": a
    rotation from the quaternion, the pixdim scaling with qfac on the third axis, the
    qoffset). Written out here, the standard's formula, so that checking a header does
    not import nibabel (see :func:`_nifti_header`)."""
    b, c, d = hdr.quatern[:3]
    a2 = 1.0 - (b * b + c * c + d * d)
    if a2 < 1e-7:  # a 180-degree rotation: the standard renormalises (b, c, d), a = 0
        norm = float(np.sqrt(b * b + c * c + d * d)) or 1.0
        a, b, c, d = 0.0, b / norm, c / norm, d / norm
    else:
        a = float(np.sqrt(a2))
    rot = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    out = np.eye(4)
    out[:3, :3] = rot * np.array([hdr.pixdim[0], hdr.pixdim[1], hdr.qfac * hdr.pixdim[2]])
    out[:3, 3] = hdr.quatern[3:]
    return out


def sform_affine(hdr: NiftiHeader) -> np.ndarray:
    """4x4 voxel-to-world matrix of the header's sform (srow_x, srow_y, srow_z)."""
    return np.vstack([np.asarray(hdr.srow, dtype=float).reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])


def _corner_gap(a: np.ndarray, b: np.ndarray, shape) -> float:
    """Largest distance (mm) between where ``a`` and ``b`` put the volume's 8 corners."""
    n = [max(int(v) - 1, 0) for v in shape]
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1])
                        for k in (0, n[2])]).T
    return float(np.linalg.norm((a - b) @ corners, axis=0).max())


def nifti_transform_note(hdr: NiftiHeader, vol: Volume) -> str | None:
    """What the header leaves ambiguous about where the image lies, or None.

    A NIfTI file carries two voxel-to-world transforms, each valid when its code is
    positive. ITK (and so clotseg and 3D Slicer) picks one by its own rule, other software
    (nibabel-based tools, FSL) may pick the other: when they place the volume more than
    half a voxel apart, the same file lies in two places depending on who reads it, and
    a mask drawn in one of them does not line up with the scan in the other. A header
    with neither transform gives no orientation at all: the image is read as if its array
    axes were the patient's. Both are stated, never silently resolved.
    """
    shape = hdr.dim[1:4]
    if hdr.qform_code <= 0 and hdr.sform_code <= 0:
        return ("the header gives no orientation (qform_code and sform_code are both 0): read "
                "with origin 0 and the array axes taken as the patient's, so left and right "
                "are not named (clots.csv side is empty) and the alignment with the other "
                "scan and the mask rests on that guess; re-export the file from the "
                "scanner's DICOM")
    if hdr.qform_code <= 0 or hdr.sform_code <= 0:
        return None
    q, s = qform_affine(hdr), sform_affine(hdr)
    tol = 0.5 * min(hdr.pixdim)
    gap = _corner_gap(q, s, shape)
    if gap <= tol:
        return None
    read = _RAS_FROM_LPS @ vol.affine
    to_q, to_s = _corner_gap(read, q, shape), _corner_gap(read, s, shape)
    used, other = ("qform", "sform") if to_q <= to_s else ("sform", "qform")
    how = "with the" if min(to_q, to_s) <= tol else "closest to the"
    return (f"the header's qform (code {hdr.qform_code}) and sform (code {hdr.sform_code}) "
            f"disagree: they place the volume's corners up to {gap:.1f} mm apart. Read "
            f"{how} {used}, as ITK does; software that reads the {other} puts this image "
            "elsewhere, and a mask drawn there will not line up with it. Re-save the file "
            "with one geometry")


def _restore_nifti_nonfinite(path: Path, vol: Volume) -> Volume:
    """ITK's NIfTI reader turns NaN voxels into 0, which would hide broken data from
    ``clotseg check``; nibabel keeps them, so float NIfTI voxels are taken from nibabel
    (same [i, j, k] order) when it sees non-finite values."""
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj, dtype=vol.array.dtype)
    if data.shape == vol.shape and not np.isfinite(data).all():
        return vol.with_array(data)
    return vol


def _check_gzip(path: Path, stop_after: int | None = None) -> int:
    """Fail clearly on truncated or corrupt gzip data; returns the decompressed length.

    Needed although it costs one extra decompression: ITK (SimpleITK 2.x) reads a
    truncated or corrupted ``.nii.gz`` without an error and returns garbage voxels; only a
    full pass checks gzip's CRC and length trailer. With ``stop_after``, a stream that
    decompresses to more than that many bytes is refused (a decompression bomb) without
    being decompressed further."""
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
                if stop_after is not None and total > stop_after:
                    raise VolumeReadError(path, f"gzip data decompresses to more than "
                                          f"{size_text(stop_after)}, far beyond what the header "
                                          "describes (corrupt file or decompression bomb)")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise VolumeReadError(path, f"corrupt or truncated gzip data ({exc})") from None
    return total


def _short_itk_message(exc: Exception) -> str:
    """Reduce ITK's multi-line exception text to one informative line: the reason on its
    ``ITK ERROR`` line (degenerate directions named in plain words), else the last line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:  # the reason sits on the "ITK ERROR" line; matrices follow it
        if "ITK ERROR:" in ln:
            reason = ln.split("ITK ERROR:", 1)[1].split("):", 1)[-1].strip()
            if "determinant is 0" in reason:
                return ("the header's axis directions are degenerate (two axes parallel "
                        "or one of length zero): no valid voxel-to-patient mapping")
            return "cannot read: " + reason.split(". Refusing", 1)[0][:200]
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
        verify_written(tmp, vol, path)
    return path


def verify_written(tmp: Path, vol: Volume, final: Path) -> None:
    """Check the file just written before it gets its final name: header size equal to the
    volume's and all its voxel data there (for NIfTI: the byte count, and for ``.nii.gz``
    also gzip's CRC and length, in one streaming pass). Needed because SimpleITK does not
    report a write cut short by a full disk. Raises ``OSError(ENOSPC)`` naming ``final``."""
    import errno

    try:
        if volume_suffix(tmp) in (".nii", ".nii.gz"):
            shape = tuple(_nifti_header(tmp).dim[1:4])
            _check_nifti(tmp)
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(tmp))
            reader.ReadImageInformation()
            shape = tuple(int(d) for d in reader.GetSize()[:3])
    except (VolumeReadError, RuntimeError) as exc:
        reason = exc.reason if isinstance(exc, VolumeReadError) else _short_itk_message(exc)
        raise OSError(errno.ENOSPC, f"incomplete write, the file read back is broken "
                      f"({reason}); nothing written", str(final)) from None
    if shape != vol.shape:
        raise OSError(errno.EIO, f"written file has size {shape}, expected {vol.shape}; "
                      "nothing written", str(final))
