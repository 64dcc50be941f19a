"""Voxel values checked where they are used: reference masks and CT intensities.

Reading a file only checks that it is a well-formed volume; whether its values make sense
depends on what it is for. A mask used to train or to score must be binary: a {0, 2, 255}
or a float mask would otherwise be binarised or averaged silently and change every volume,
length and Dice computed from it. CT voxels that are NaN or infinite would turn a whole
prediction into "no clot" without a word, and a scan whose voxels all hold one value (a
blank export, a series of padding) holds no image at all: a network given one beside the
other scan still marks a clot from that other scan, and the clot's measurements are then
read off nothing. All are errors naming the file (``clotseg check`` reports the same
constant image), the first two with an explicit way out, each also a command-line flag:

* ``CLOTSEG_MASK_255=1`` (``--mask-255``): masks stored as {0, 255} are read as {0, 1}.
* ``CLOTSEG_REPLACE_NONFINITE=<HU>`` (``--replace-nonfinite HU``): non-finite CT voxels
  are replaced by that value, with a warning saying how many.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, VolumeReadError
from clotseg.io.volume import Volume

MASK_255_ENV = "CLOTSEG_MASK_255"
NONFINITE_ENV = "CLOTSEG_REPLACE_NONFINITE"


def allow_mask_255() -> bool:
    return os.environ.get(MASK_255_ENV, "").strip() not in ("", "0")


def nonfinite_replacement() -> float | None:
    """The HU value non-finite voxels are replaced with, or None (they are an error)."""
    text = os.environ.get(NONFINITE_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ClotsegError(f"{NONFINITE_ENV} must be a number of HU, got {text!r}") from None
    if not np.isfinite(value):
        raise ClotsegError(f"{NONFINITE_ENV} must be a finite number, got {text!r}")
    return value


def binary_mask(vol: Volume, path: str | Path) -> Volume:
    """``vol`` as a uint8 {0, 1} mask; any other content is a :class:`VolumeReadError`.

    Integer {0, 1} (or {0, 255} when allowed) only: a float mask is refused even when its
    values happen to be 0.0 and 1.0 elsewhere, since soft or resampled masks would be
    binarised at an arbitrary level.
    """
    arr = np.asarray(vol.array)
    if arr.dtype.kind == "b":
        return vol.with_array(arr.astype(np.uint8))
    if arr.dtype.kind == "f":
        raise VolumeReadError(path, f"mask has floating-point voxels ({arr.dtype}); a "
                              "mask must be stored as integer labels 0/1")
    if arr.dtype.kind not in "iu":
        raise VolumeReadError(path, f"mask has unsupported voxel type {arr.dtype}")
    values = np.unique(arr)
    if np.all(np.isin(values, (0, 1))):
        return vol if arr.dtype == np.uint8 else vol.with_array(arr.astype(np.uint8))
    if allow_mask_255() and np.all(np.isin(values, (0, 255))):
        return vol.with_array((arr == 255).astype(np.uint8))
    shown = ", ".join(str(v) for v in values[:6]) + (" ..." if values.size > 6 else "")
    extra = "; masks stored as 0/255 are read with --mask-255" if 255 in values else ""
    raise VolumeReadError(path, f"mask is not binary (values {shown}; expected 0/1){extra}")


def usable_ct(vol: Volume, path: str | Path, what: str) -> Volume:
    """:func:`finite_ct`, and an error naming the file when every voxel holds the same
    value (module docstring): such a scan is refused, not predicted from. A voxel spacing
    no CT scanner reconstructs is a warning (:func:`spacing_note`)."""
    vol = finite_ct(vol, path, what)
    arr = np.asarray(vol.array)
    if arr.size and arr.min() == arr.max():
        raise VolumeReadError(path, f"{what} is a constant image (every voxel "
                              f"{float(arr.flat[0]):g}): it holds no scan; repair or "
                              "re-export it, or leave it out of the case to predict from "
                              "the other scan alone")
    shifted = hu_offset_note(arr, what)
    if shifted:
        raise VolumeReadError(path, shifted)
    note = spacing_note(vol)
    if note:
        warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
    return vol


#: Highest plausible median voxel (HU) of a head CT or CTA: whatever the crop, most voxels
#: are air (about -1000), fat, fluid or brain (20-40). A median far above it means every
#: value is shifted, most often by a rescale intercept (-1024) that was not applied.
MAX_MEDIAN_HU = 300.0
#: Voxels sampled (evenly strided) for that median: exact enough, and cheap on 100 M voxels.
MEDIAN_SAMPLE = 1_000_000


def hu_offset_note(arr: np.ndarray, what: str) -> str | None:
    """Why ``arr`` cannot be a CT in HU (its median is above :data:`MAX_MEDIAN_HU`), or
    None. Such a scan passes every range check (a raw 0-4095 CT looks like HU 0-4095) and
    would be segmented as nothing at all: the network's windows see saturated tissue."""
    flat = np.asarray(arr).ravel(order="K")  # a view for C- or Fortran-ordered arrays
    median = float(np.median(flat[:: max(1, flat.size // MEDIAN_SAMPLE)]))
    if median <= MAX_MEDIAN_HU:
        return None
    return (f"{what} values look shifted: the median voxel is {median:g} HU, where a head "
            "CT's is air (about -1000) or brain (20-40); the rescale intercept (typically "
            "-1024) was probably not applied. Re-export the scan in Hounsfield units")


#: Voxel spacings (mm) that CT scanners reconstruct; outside it the header's unit is suspect
#: (a model trained on sub-millimetre voxels says nothing about 2 cm ones).
CT_SPACING_MM = (0.05, 10.0)


def spacing_note(vol: Volume) -> str | None:
    """A warning text when ``vol``'s spacing lies outside :data:`CT_SPACING_MM`, else None."""
    lo, hi = CT_SPACING_MM
    if min(vol.spacing) >= lo and max(vol.spacing) <= hi:
        return None
    shown = " x ".join(f"{v:.4g}" for v in vol.spacing)
    return (f"voxel spacing {shown} mm is outside what CT scanners reconstruct "
            f"({lo:g}-{hi:g} mm): a spacing in the wrong unit?")


def finite_ct(vol: Volume, path: str | Path, what: str) -> Volume:
    """``vol`` unchanged when all voxels are finite; else an error naming the file, or
    (when a replacement value is set) a copy with those voxels replaced and a warning."""
    arr = np.asarray(vol.array)
    if arr.dtype.kind != "f":
        return vol
    bad = ~np.isfinite(arr)
    n = int(np.count_nonzero(bad))
    if n == 0:
        return vol
    value = nonfinite_replacement()
    if value is None:
        raise VolumeReadError(path, f"{what} has {n} non-finite voxel(s) (NaN or inf); "
                              "repair the file, or replace them with --replace-nonfinite HU")
    warnings.warn(f"{path}: {n} non-finite {what} voxel(s) replaced by {value:g} HU",
                  UserWarning, stacklevel=2)
    fixed = np.array(arr, copy=True)
    fixed[bad] = value
    return vol.with_array(fixed)


def distinct_scans(cta: Volume | None, ncct: Volume | None, ncct_path: str | Path) -> None:
    """An error naming the NCCT file when it holds exactly the CTA's voxels: one scan given
    twice (a copied file, or one series exported under both names). The network would
    read the contrast lumen as a hyperdense NCCT everywhere and mark clots on patent
    vessels, so the case is refused rather than segmented."""
    if cta is None or ncct is None or cta.shape != ncct.shape:
        return
    if np.array_equal(np.asarray(cta.array), np.asarray(ncct.array)):
        raise VolumeReadError(ncct_path, "the NCCT holds exactly the CTA's voxels: the same "
                              "scan given twice? Give the non-contrast scan, or leave the "
                              "NCCT out to predict from the CTA alone")

