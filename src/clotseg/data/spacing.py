"""One voxel size for training and prediction (``data.target_spacing``).

Scanners differ in in-plane spacing (0.4–1.0 mm) and slice thickness (0.5–5 mm). A 2D
network that sees each scan at its own spacing sees a 3 mm artery as 3 pixels on one
scanner and 7 on another, and a slab of three slices covers 1.5 mm or 7.5 mm. Resampling
every case to one spacing before training, and every new scan to the same spacing before
prediction (the probability is mapped back onto the CTA grid), removes that difference.
As in nnU-Net, ``auto`` takes the median spacing of the training cases, so a cohort that
is already uniform is not resampled at all. The resampling itself is the preprocessing
pipeline's (:mod:`clotseg.preprocess.pipeline`), so ``predict`` repeats it exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clotseg.io.layouts import CaseRef
from clotseg.io.volume import Grid


def patient_spacing(grid: Grid) -> np.ndarray:
    """Spacing along the patient's x, y, z (the array axis closest to each)."""
    out = np.zeros(3)
    axes = np.argmax(np.abs(grid.direction_matrix), axis=0)  # patient axis of array axis
    for a, p in enumerate(axes):
        out[p] = grid.spacing[a]
    return out


def case_grid(case: CaseRef) -> Grid:
    """The CTA grid of a case, from the file header where there is one."""
    from clotseg.io.ongrid import file_grid
    from clotseg.io.readers import volume_suffix

    if case.cta is not None and Path(case.cta).is_file() and volume_suffix(case.cta):
        return file_grid(case.cta)
    return case.read("cta").grid


def median_spacing(cases: list[CaseRef]) -> tuple[float, float, float]:
    """Median patient-axis spacing of ``cases``, rounded to 0.01 mm."""
    sp = np.median([patient_spacing(case_grid(c)) for c in cases], axis=0)
    return tuple(float(v) for v in np.round(sp, 2))


def resample_settings(target, cases: list[CaseRef], roi: str = "none",
                      roi_size_mm: float = 120.0) -> dict | None:
    """Preprocessing settings (no registration) that resample to ``target`` (``auto``,
    ``none``/None or [x, y, z] mm) and crop to ``roi`` (``none`` or ``auto``, a cube of
    ``roi_size_mm``); None when nothing is to be done."""
    from clotseg.preprocess.pipeline import PreprocessSettings

    if target in (None, "none") and roi == "none":
        return None
    spacing = (None if target in (None, "none") else median_spacing(cases)
               if target == "auto" else tuple(float(v) for v in target))
    return PreprocessSettings(register=False, spacing=spacing, roi=roi,
                              roi_size_mm=roi_size_mm).to_dict()


def model_preprocessing(data, target, train_cases: list[CaseRef], roi: str = "none",
                        roi_size_mm: float = 120.0):
    """What ``clotseg train`` stores as ``model.json`` ``preprocess`` for a model trained
    on ``data`` with ``data.target_spacing = target``, and the resampling its cache
    applies: ``(settings or None, resample settings dict or None)``.

    A dataset written by ``clotseg preprocess`` carries its settings, which predict
    repeats on raw scans (register, ROI, and its ``--target-spacing`` if one was given).
    When it kept each scan's own spacing, ``target`` still applies: the cached cases
    (already registered and cropped) are resampled to it, and predict resamples its ROI
    to it, so that a clinical 0.4 mm scan and a 0.7 mm one show the network vessels of
    one size, as for raw data (and inference runs on a sixth of the voxels of a 0.4 mm
    ROI). Otherwise every case is resampled to ``target`` (``auto``: the median spacing
    of ``train_cases``), with no registration, cropped to the automatic ROI when ``roi``
    is ``auto`` (``data.roi``: whole-head scans cache a fifth of their voxels).
    """
    import dataclasses

    from clotseg.errors import ConfigError
    from clotseg.preprocess.pipeline import PreprocessSettings, inference_settings_of

    settings = inference_settings_of(data)
    if settings is not None and roi != "none":
        raise ConfigError(f"data.roi={roi}: {data} was written by `clotseg preprocess`, which "
                          f"chose its ROI already (roi: {settings.roi}); set it there "
                          "(`preprocess --roi`) and leave data.roi at none")
    if settings is not None and settings.spacing is not None:
        return settings, None  # preprocess chose the spacing: no need to read the headers
    if settings is None:
        resample = resample_settings(target, train_cases, roi, roi_size_mm)
        return (None if resample is None else PreprocessSettings.from_dict(resample)), resample
    resample = resample_settings(target, train_cases)
    if resample is None:
        return settings, None
    return dataclasses.replace(settings, spacing=tuple(resample["spacing"])), resample
