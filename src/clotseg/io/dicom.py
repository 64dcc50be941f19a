"""Reading CT DICOM series (read only), robustly, with pydicom.

What it does and why
--------------------
* **Finding series.** Every file under the folder (recursively; hidden files and non-DICOM
  files are skipped) is read header-only and grouped by SeriesInstanceUID
  (:func:`find_series`). With several series, one is picked by ``series_uid``, or by the
  wanted ``kind`` ("cta" / "ncct", by default the folder's name when it is ``cta/`` or
  ``ncct/``) from keywords in the SeriesDescription / ProtocolName / contrast tags;
  localizers (scouts) are ignored. Anything ambiguous is an error that lists the series.
* **Only CT.** Another modality (MR, PT, ...) is a :class:`VolumeReadError`.
* **HU.** Each slice's stored values are mapped with its own RescaleSlope/Intercept.
* **Geometry from ImagePositionPatient/ImageOrientationPatient**, never from slice order
  in the folder or SliceLocation. Slices are sorted along the slice normal. Duplicate
  positions, mixed orientations or sizes, and gaps (a missing slice, non-uniform spacing)
  are errors rather than a silently distorted volume.
* **Gantry tilt.** A tilted acquisition stacks its slices along a direction that is not
  perpendicular to the slice planes (ImageOrientationPatient ⟂ stacking direction fails;
  GantryDetectorTilt ≠ 0). ITK images cannot hold such a sheared grid (directions must be
  orthonormal), so we regularise it the way 3D Slicer does: keep each acquired slice plane
  and its in-plane pixel grid, and shift every slice within its own plane onto a common
  rectangular grid whose third axis is the slice normal (spacing = distance between the
  planes). The shift is the in-plane component of the stacking offset, applied with
  linear interpolation (:func:`scipy.ndimage.affine_transform`), so every voxel keeps its
  true physical position; the grid is enlarged to hold all shifted slices and the added
  corners are filled with the series' lowest value (air / outside the scan).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clotseg.errors import VolumeReadError
from clotseg.io.volume import Volume

#: Keywords (lower case) in series descriptions that identify the two modalities.
KIND_KEYWORDS = {
    "cta": ("cta", "angio", "angiography", "c+", "arterial", "cow", "willis", "ca "),
    "ncct": ("ncct", "non-contrast", "non contrast", "noncontrast", "plain", "native",
             "nativ", "without contrast", "w/o", "wo contrast", "unenhanced", "pre-contrast",
             "precontrast", "c-", "ncect", "routine head", "head w/o"),
}

#: Relative tolerance on slice spacing before a series counts as non-uniform.
SPACING_RTOL = 0.05
#: In-plane offset per slice (mm) above which a series counts as gantry-tilted.
TILT_ATOL_MM = 1e-3

_HEADER_TAGS = ["SeriesInstanceUID", "SeriesDescription", "ProtocolName", "Modality",
                "ImageType", "ContrastBolusAgent", "SeriesNumber", "SOPClassUID", "PatientID"]


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder (headers only)."""

    uid: str
    description: str
    modality: str
    n_files: int
    files: list[Path] = field(default_factory=list, repr=False)
    kind: str | None = None  # "cta", "ncct" or None (guessed from the description)
    localizer: bool = False
    number: int | None = None
    patient: str = ""  # PatientID ("" when missing)

    def line(self) -> str:
        return (f"{self.uid} ({self.modality}, {self.n_files} files, "
                f"'{self.description}')")


def _dicom_files(folder: Path):
    """Regular files under ``folder``. Anything else (a named pipe, a socket, a device)
    is skipped with a warning: opening a FIFO would block the scan forever."""
    import stat

    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(root) / name
            try:
                mode = path.stat().st_mode
            except OSError:
                continue  # a dangling link or a file removed meanwhile
            if not stat.S_ISREG(mode):
                warnings.warn(f"{path}: not a regular file (pipe, socket or device); "
                              "skipped", UserWarning, stacklevel=2)
                continue
            yield path


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None


def guess_kind(text: str) -> str | None:
    """"cta" or "ncct" from a series description (None when it says neither)."""
    t = f" {text.lower()} "
    hits = {k for k, words in KIND_KEYWORDS.items() if any(w in t for w in words)}
    return hits.pop() if len(hits) == 1 else None


def find_series(folder: str | Path) -> list[SeriesInfo]:
    """All DICOM series under ``folder``, sorted by series number then UID."""
    folder = Path(folder)
    groups: dict[str, SeriesInfo] = {}
    for path in _dicom_files(folder):
        ds = _read_header(path)
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        uid = str(ds.SeriesInstanceUID)
        info = groups.get(uid)
        if info is None:
            desc = " ".join(str(ds.get(t, "") or "") for t in ("SeriesDescription",
                                                                 "ProtocolName")).strip()
            image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
            kind = guess_kind(desc)
            if kind is None and str(ds.get("ContrastBolusAgent", "") or "").strip():
                kind = "cta"
            number = ds.get("SeriesNumber")
            info = groups[uid] = SeriesInfo(
                uid, str(ds.get("SeriesDescription", "") or ""), str(ds.get("Modality", "")),
                0, [], kind, "LOCALIZER" in image_type,
                int(number) if number not in (None, "") else None,
                str(ds.get("PatientID", "") or ""))
        info.files.append(path)
        info.n_files += 1
    return sorted(groups.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))


def holds_dicom(folder: str | Path) -> bool:
    """True when a file under ``folder`` (any depth) has a DICOM header; stops at the first."""
    return any(_read_header(p) is not None for p in _dicom_files(Path(folder)))


def list_series(folder: str | Path) -> list[str]:
    """DICOM series instance UIDs found under ``folder`` (empty if none)."""
    return [s.uid for s in find_series(folder)]


def select_series(folder: Path, series: list[SeriesInfo], series_uid: str | None,
                  kind: str | None) -> SeriesInfo:
    """The one series to read, or a :class:`VolumeReadError` explaining the choice."""
    if not series:
        raise VolumeReadError(folder, "folder holds no DICOM files")
    if series_uid is not None:
        for s in series:
            if s.uid == series_uid:
                return s
        raise VolumeReadError(folder, f"no DICOM series with UID {series_uid}; found: "
                              + "; ".join(s.line() for s in series))
    images = [s for s in series if not s.localizer] or series
    images = [s for s in images if s.modality.upper() == "CT"] or images
    if len(images) == 1:
        return images[0]
    kind = kind or _kind_from_name(folder.name)
    if kind is not None:
        matches = [s for s in images if s.kind == kind]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            images = matches
    raise VolumeReadError(folder, f"folder holds {len(images)} DICOM series and which one is "
                          f"the {kind.upper() if kind else 'CTA or NCCT'} is unclear; put each "
                          "series in its own folder or choose a series UID: "
                          + "; ".join(s.line() for s in images))


def _kind_from_name(name: str) -> str | None:
    n = name.lower()
    return n if n in ("cta", "ncct") else None


def read_dicom_series(folder: str | Path, series_uid: str | None = None, *,
                      kind: str | None = None) -> Volume:
    """Read one CT series from ``folder`` as a :class:`Volume` in HU (see module docstring).

    ``series_uid`` picks a series; otherwise a folder with one image series is read, and with
    several the one matching ``kind`` ("cta" / "ncct"; default: the folder's name).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(folder, "not a folder (a DICOM series is read from a folder)")
    info = select_series(folder, find_series(folder), series_uid, kind)
    if info.modality.upper() != "CT":
        raise VolumeReadError(folder, f"series {info.uid} has modality "
                              f"'{info.modality or 'unknown'}'; clotseg needs CT (CTA and NCCT)")
    return read_series_files(info.files, folder)


def read_series_files(files: list[Path], where: Path) -> Volume:
    """Assemble a volume from the files of one series (``where`` names it in errors),
    within the size limits every volume obeys (:mod:`clotseg.io.limits`)."""
    from clotseg.io.limits import check_extent

    return check_extent(where, _read_series_files(files, where))


def _read_series_files(files: list[Path], where: Path) -> Volume:
    import pydicom

    if len(files) == 1:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            from clotseg.io.limits import check_size

            check_size(where, (int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0),
                               frames), 2)
            return _read_multiframe(files[0], where)
        raise VolumeReadError(where, "DICOM series has only 1 slice; a 3D series needs several")
    slices = [_Slice.read(f, where) for f in files]
    return assemble(slices, where)


@dataclass
class _Slice:
    path: Path
    position: np.ndarray  # ImagePositionPatient (mm)
    row_dir: np.ndarray  # direction of increasing column index (ITK i axis)
    col_dir: np.ndarray  # direction of increasing row index (ITK j axis)
    spacing: tuple[float, float]  # (between columns, between rows) = (i, j) spacing in mm
    shape: tuple[int, int]  # (rows, columns)
    dataset: object
    tilt: float = 0.0

    @classmethod
    def read(cls, path: Path, where: Path) -> _Slice:
        import pydicom

        try:  # pixel data deferred: read slice by slice when stacked, so memory holds one
            ds = pydicom.dcmread(path, defer_size="64 KB")
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise VolumeReadError(path, f"unreadable DICOM file ({exc})") from None
        missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                               "Rows", "Columns") if t not in ds]
        if "PixelData" not in ds:
            missing.append("PixelData")
        if missing:
            raise VolumeReadError(path, f"DICOM slice lacks {', '.join(missing)}")
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if iop.size != 6:
            raise VolumeReadError(path, "ImageOrientationPatient must have 6 values")
        row_dir, col_dir = _unit(iop[:3]), _unit(iop[3:])
        if abs(float(row_dir @ col_dir)) > 1e-3:
            raise VolumeReadError(path, "ImageOrientationPatient axes are not perpendicular")
        ps = [float(v) for v in ds.PixelSpacing]
        if len(ps) != 2 or min(ps) <= 0:
            raise VolumeReadError(path, f"invalid PixelSpacing {ps}")
        return cls(path, np.asarray([float(v) for v in ds.ImagePositionPatient]), row_dir,
                   col_dir, (ps[1], ps[0]), (int(ds.Rows), int(ds.Columns)), ds,
                   float(ds.get("GantryDetectorTilt", 0.0) or 0.0))

    def hu(self) -> np.ndarray:
        """Pixel values in HU, indexed [i, j] (column, row)."""
        ds = self.dataset
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - missing codec, corrupt data
            pixels = _decode_with_gdcm(self.path, exc)
            return pixels.T
        if pixels.shape != self.shape:
            raise VolumeReadError(self.path, f"pixel data of shape {pixels.shape}, expected "
                                  f"{self.shape}")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        return (pixels.astype(np.float64) * slope + intercept).T


def _decode_with_gdcm(path: Path, exc: Exception) -> np.ndarray:
    """Pixels (already rescaled to HU by GDCM) for transfer syntaxes pydicom cannot decode
    without extra plug-ins (JPEG, JPEG 2000, JPEG-LS): SimpleITK's GDCM reads them."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise VolumeReadError(path, f"cannot decode pixel data ({exc})") from None
    arr = sitk.GetArrayFromImage(image)
    return np.asarray(arr.reshape(arr.shape[-2:]), dtype=np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise ValueError("zero direction vector")
    return v / n


def assemble(slices: list[_Slice], where: Path) -> Volume:
    """Sort, check and stack slices; regularise a gantry-tilted stack (module docstring)."""
    first = slices[0]
    for s in slices[1:]:
        if s.shape != first.shape:
            raise VolumeReadError(s.path, f"slice size {s.shape} differs from {first.shape} "
                                  f"({first.path.name}); mixed series?")
        if not (np.allclose(s.row_dir, first.row_dir, atol=1e-4)
                and np.allclose(s.col_dir, first.col_dir, atol=1e-4)):
            raise VolumeReadError(s.path, "slice orientation differs from the rest of the "
                                  "series (mixed series or variable tilt)")
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4):
            raise VolumeReadError(s.path, f"pixel spacing {s.spacing} differs from "
                                  f"{first.spacing}")
    normal = np.cross(first.row_dir, first.col_dir)
    order = np.argsort([float(s.position @ normal) for s in slices], kind="stable")
    slices = [slices[i] for i in order]
    dist = np.asarray([float(s.position @ normal) for s in slices])
    gaps = np.diff(dist)
    _check_gaps(gaps, dist, slices, where)
    dz = float(np.median(gaps))
    step = (slices[-1].position - slices[0].position) / (len(slices) - 1)
    shear = step - (step @ normal) * normal  # in-plane offset per slice (zero without tilt)
    from clotseg.io.limits import check_size

    check_size(where, (first.shape[1], first.shape[0], len(slices)), 2)  # int16 HU at least
    arr = _stack_hu(slices)
    spacing = (first.spacing[0], first.spacing[1], dz)
    direction = np.column_stack([first.row_dir, first.col_dir, normal])
    if np.linalg.norm(shear) * (len(slices) - 1) <= TILT_ATOL_MM:
        return Volume(arr, spacing, tuple(slices[0].position), tuple(direction.ravel()))
    angle = float(np.degrees(np.arctan2(np.linalg.norm(shear), step @ normal)))
    if first.tilt == 0.0:
        warnings.warn(f"{where}: slices are stacked obliquely ({angle:.2f} deg from the slice "
                      "normal) though GantryDetectorTilt is 0; regularised onto a rectangular "
                      "grid", UserWarning, stacklevel=3)
    return regularize_tilt(arr, slices[0].position, direction, spacing, shear)


def _check_gaps(gaps: np.ndarray, dist: np.ndarray, slices: list[_Slice], where: Path) -> None:
    dup = np.flatnonzero(gaps < 1e-3)
    if dup.size:
        a, b = slices[dup[0]].path.name, slices[dup[0] + 1].path.name
        raise VolumeReadError(where, f"{dup.size + 1} slices share a position ({a} and {b} at "
                              f"{dist[dup[0]]:.3f} mm): duplicate or mixed acquisitions")
    med = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - med) > SPACING_RTOL * med + 1e-3)
    if bad.size:
        i = int(bad[0])
        kind = "missing slice(s)" if gaps[i] > 1.5 * med else "non-uniform slice spacing"
        raise VolumeReadError(where, f"incomplete or irregular series: {kind} between "
                              f"{slices[i].path.name} and {slices[i + 1].path.name} (gap "
                              f"{gaps[i]:.3f} mm, expected {med:.3f} mm)")


def _stack_hu(slices: list[_Slice]) -> np.ndarray:
    """HU volume [i, j, k]: int16 while the values are integers in range (the usual CT
    case, half the memory of float32), float32 otherwise."""
    first = slices[0].hu()
    out = np.empty((*first.shape, len(slices)), dtype=np.int16)
    for k, s in enumerate(slices):
        hu = first if k == 0 else s.hu()
        if out.dtype == np.int16 and not (np.all(np.mod(hu, 1) == 0) and hu.min() >= -32768
                                          and hu.max() <= 32767):
            out = out.astype(np.float32)
        out[:, :, k] = hu
        s.dataset = None  # free the pixel data as we go
    return out


def regularize_tilt(arr: np.ndarray, origin: np.ndarray, direction: np.ndarray, spacing,
                    shear: np.ndarray) -> Volume:
    """Shift each slice ``k`` by ``k * shear`` (mm, in-plane) onto one rectangular grid.

    Voxel ``(i, j)`` of acquired slice ``k`` lies at
    ``origin + i*sx*r + j*sy*c + k*(dz*n + shear)``. On the output grid (axes r, c, n) that
    point has index ``(i + k*a - oi, j + k*b - oj, k)`` with ``a, b`` the shear in pixels and
    ``(oi, oj)`` the most negative shift, so output ``(I, J, k)`` samples slice ``k`` at
    ``(I - k*a + oi, J - k*b + oj)``.
    """
    from scipy import ndimage

    sx, sy, _ = spacing
    r, c = direction[:, 0], direction[:, 1]
    a, b = float(shear @ r) / sx, float(shear @ c) / sy
    n = arr.shape[2]
    shifts = np.outer(np.arange(n), [a, b])  # per slice, in pixels
    lo = np.floor(shifts.min(0)).astype(int)
    hi = np.ceil(shifts.max(0)).astype(int)
    out_shape = (arr.shape[0] + int(hi[0] - lo[0]), arr.shape[1] + int(hi[1] - lo[1]), n)
    fill = float(arr.min())
    out = np.empty(out_shape, dtype=np.float32)
    for k in range(n):
        offset = lo - shifts[k]  # output (I, J) samples input (I + offset)
        out[:, :, k] = ndimage.affine_transform(arr[:, :, k].astype(np.float32), np.eye(2),
                                                offset=offset, output_shape=out_shape[:2],
                                                order=1, cval=fill, mode="constant")
    new_origin = origin + lo[0] * sx * r + lo[1] * sy * c
    if np.issubdtype(arr.dtype, np.integer):
        out = np.rint(out).astype(arr.dtype)
    return Volume(out, spacing, tuple(new_origin), tuple(direction.ravel()))


def _read_multiframe(path: Path, where: Path) -> Volume:
    """An enhanced (multi-frame) CT object: one file holding the whole volume. GDCM (through
    SimpleITK) reads its per-frame geometry and applies the rescale."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(where, f"cannot read multi-frame DICOM: "
                              f"{str(exc).splitlines()[-1]}") from None
    if image.GetDimension() != 3:
        raise VolumeReadError(where, "multi-frame DICOM is not a 3D volume")
    return Volume.from_sitk(image)
