"""The preprocessing pipeline: register NCCT to CTA, resample, crop an ROI — reversibly.

The original research code did these steps by hand in 3D Slicer and kept no record, so its
masks could not be put back onto the patient's scan. Here every case gets a
:class:`~clotseg.preprocess.record.PreprocessRecord` (written as ``preprocess.json`` next
to the outputs): the original CTA grid, the resampled grid, the crop box and the NCCT
transform, and its :meth:`~clotseg.preprocess.record.PreprocessRecord.restore_mask` maps a
mask from the processed grid back onto *exactly* the original CTA grid.

Order of operations for one case (CTA is the reference; nothing moves the CTA):

1. NCCT → CTA rigid registration (optional; otherwise the identity), giving transform T
   (:func:`align_ncct`).
2. Target grid G1: the CTA grid, or the same box at the requested spacing.
3. ROI box on the CTA (:func:`clotseg.preprocess.roi.roi_box`), expressed on G1; the final
   grid is that sub-box of G1.
4. CTA, NCCT (through T) and mask are sampled once, directly onto the final grid (one
   interpolation per image; no resampling at all when the spacing is unchanged and the
   NCCT already lies on the CTA grid — then it is an exact crop).

``predict`` also needs the NCCT on the *whole* CTA grid (measurements, previews): it keeps
one :class:`CtaGridNcct` per case, which resamples the NCCT onto the CTA grid once per
alignment and gives the same volume to the networks, to an exact-crop preprocessing and to
the measurements. :func:`ncct_on_cta_grid` is that volume for any caller (e.g. the HTML
report, so that its NCCT panels show what ``predict`` used).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from clotseg.errors import ClotsegError, UsageError
from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.ncct import (
    AIR_HU,
    CtaGridNcct,
    NcctAlignment,
    align_ncct,
    ncct_on_cta_grid,
    resample_ncct,
)
from clotseg.preprocess.record import INFO_FORMAT, PreprocessRecord, box_on_grid
from clotseg.preprocess.resample import grid_with_spacing, resample_to_grid
from clotseg.preprocess.roi import Box, crop, crop_grid, roi_box
from clotseg.preprocess.settings import ROI_MODES, PreprocessSettings
from clotseg.timing import stage

#: Smallest extent (mm) along any axis of the processed region (on the CTA grid, or on the
#: one scan's grid of a one-scan case) below which a warning says the result may mean
#: nothing: an M2 clot is about 5 mm long, and telling it from a speck takes the vessel
#: on either side of it.
MIN_REGION_MM = 15.0

__all__ = ["AIR_HU", "INFO_FORMAT", "ROI_MODES", "CtaGridNcct", "NcctAlignment",
           "PreprocessRecord", "PreprocessSettings", "PreprocessedCase", "align_ncct",
           "box_on_grid", "inference_settings_of", "ncct_on_cta_grid", "preprocess_case",
           "preprocess_dataset", "resample_ncct", "restore_prediction", "restore_probability",
           "spacing_for_grid"]


@dataclass
class PreprocessedCase:
    """Volumes on the processed grid, the record needed to map results back, and the NCCT
    alignment used (to share it with other preprocessings of the same case)."""

    cta: Volume
    ncct: Volume
    mask: Volume | None
    record: PreprocessRecord
    alignment: NcctAlignment = NcctAlignment()

    @property
    def info(self) -> dict:
        """The record as the JSON object ``preprocess.json`` holds (a fresh dict)."""
        return self.record.to_dict()


def spacing_for_grid(grid: Grid, xyz) -> tuple[float, float, float]:
    """Per-array-axis spacing from patient-axis (x, y, z) spacing."""
    patient_axis = np.argmax(np.abs(grid.direction_matrix), axis=0)
    xyz = np.asarray(xyz, dtype=float)
    return tuple(float(xyz[a]) for a in patient_axis)


# --- one case -------------------------------------------------------------------------------
def preprocess_case(cta: Volume, ncct: Volume, mask: Volume | None,
                    settings: PreprocessSettings | None = None, *,
                    alignment: NcctAlignment | None = None,
                    ncct_on_cta: Callable[[NcctAlignment], Volume] | None = None,
                    missing: str | None = None) -> PreprocessedCase:
    """Register, resample and crop one case (module docstring); see :class:`PreprocessedCase`.

    Problems the user must know about (poor alignment, partial NCCT coverage, an ROI that
    cuts the clot) are both warned (``UserWarning``) and listed in the record's
    ``warnings``. ``alignment``: the registration of this case found before (e.g. by
    another model's preprocessing; registration is deterministic), used instead of
    registering again when ``settings.register``. ``ncct_on_cta``: gives the NCCT on the
    whole CTA grid for an alignment (:meth:`CtaGridNcct.get`); when the processed grid is
    an exact crop, the processed NCCT is then cut from that volume instead of being
    resampled a second time.

    ``missing``: ``"cta"`` or ``"ncct"`` for a one-modality case, whose absent scan is
    a stand-in on the present scan's grid (``cta``/``ncct`` keep their places, so the
    present scan's grid is "the CTA grid" here). Nothing is registered then, and with
    only an NCCT an ``auto`` ROI (found from the CTA's contrast-filled vessels) is the
    whole volume, as ``roi: none``: no clot can fall outside it.
    """
    settings = settings or PreprocessSettings()
    if missing is not None:
        settings = replace(settings, register=False,
                           roi="none" if missing == "cta" and settings.roi == "auto"
                           else settings.roi)
    notes: list[str] = []
    _check_inputs(cta, ncct, mask)
    g1 = cta.grid if settings.spacing is None else grid_with_spacing(
        cta.grid, spacing_for_grid(cta.grid, settings.spacing))
    resampled = not g1.same_as(cta.grid, atol_mm=1e-6)
    with stage("roi"):
        box0 = roi_box(ncct if missing == "cta" else cta, mode=settings.roi, mask=mask,
                       size_mm=settings.roi_size_mm, margin_mm=settings.roi_margin_mm)
    box1 = box_on_grid(box0, cta.grid, g1) if resampled else box0
    final = crop_grid(g1, box1)
    notes.extend(_small_region(final))
    with stage("register"):
        if not settings.register:
            alignment = NcctAlignment()
        elif alignment is None:
            alignment = align_ncct(cta, ncct, settings)
    notes.extend(alignment.notes)
    # The NCCT is resampled straight onto what is kept (the ROI), never onto the whole
    # CTA grid first (at clinical size that would be a second full-resolution volume),
    # unless the caller has that volume anyway (``ncct_on_cta``).
    full = ncct_on_cta(alignment) if ncct_on_cta is not None and not resampled else None
    with stage("resample"):
        out_cta, out_ncct, out_mask = _sample(cta, ncct, mask, final, box0, resampled,
                                              alignment.transform, full)
    with stage("register"):
        coverage = _coverage(ncct, final, alignment.transform)
    if coverage < 0.95:
        notes.append(f"NCCT covers only {100 * coverage:.0f} % of the processed CTA region "
                     f"(the rest is filled with {AIR_HU:g} HU)")
    mask_info = _mask_info(mask, out_mask, box0)
    if mask_info.get("clot_cut_by_roi"):
        notes.append(f"the ROI cuts the clot: {mask_info['clot_voxels_outside_roi']} clot "
                     "voxel(s) lie outside it (enlarge --roi-size or use --roi mask)")
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
    record = PreprocessRecord(
        original_grid=cta.grid, grid=final, settings=replace(settings),
        ncct_original_grid=ncct.grid, resampled_grid=g1, resampled=bool(resampled),
        crop_box=box1, crop_box_original=box0,
        roi_centre_mm=tuple(round(float(v), 3) for v in final.index_to_physical(
            (np.asarray(final.shape) - 1) / 2.0)[0]),
        registration=alignment.registration, ncct_coverage=round(float(coverage), 4),
        mask=mask_info, warnings=tuple(notes))
    return PreprocessedCase(out_cta, out_ncct, out_mask, record, alignment)


def _sample(cta: Volume, ncct: Volume, mask: Volume | None, final: Grid, box0: Box,
            resampled: bool, transform: Any, ncct_full: Volume | None
            ) -> tuple[Volume, Volume, Volume | None]:
    """CTA, NCCT (through ``transform``) and mask on the final grid."""
    if resampled:
        out_cta = resample_to_grid(cta, final, interpolation="linear", default_value=AIR_HU)
        out_ncct = resample_to_grid(ncct, final, transform=transform, interpolation="linear",
                                    default_value=AIR_HU)
        out_mask = None if mask is None else resample_to_grid(mask, final,
                                                              interpolation="label")
        return out_cta, out_ncct, out_mask
    out_cta = crop(cta, box0)
    if ncct_full is not None:
        out_ncct = crop(ncct_full, box0)
    elif transform is None and ncct.grid.same_as(cta.grid):
        out_ncct = crop(ncct, box0)
    else:
        out_ncct = resample_to_grid(ncct, out_cta.grid, transform=transform,
                                    interpolation="linear", default_value=AIR_HU)
    out_mask = None if mask is None else crop(mask.with_array(
        (np.asarray(mask.array) > 0).astype(np.uint8)), box0)
    return out_cta, out_ncct, out_mask


def _require_both(vols) -> None:
    """A dataset written by ``preprocess`` is for training, whose cases need both scans
    (``predict`` takes a one-modality case as it is, nothing to preprocess first)."""
    for name in ("cta", "ncct"):
        if getattr(vols, name) is None:
            raise ClotsegError(f"case {vols.case_id}: no {name.upper()}; preprocessing "
                               "needs a CTA and an NCCT (`predict` takes a one-modality "
                               "case as it is)")


def _check_inputs(cta: Volume, ncct: Volume, mask: Volume | None) -> None:
    if not ncct.grid.overlaps(cta.grid):
        raise ClotsegError("NCCT does not overlap the CTA in patient space (wrong file or "
                           "broken geometry)")
    if mask is not None and not mask.grid.same_as(cta.grid):
        raise ClotsegError("clot mask grid differs from the CTA grid ("
                           + "; ".join(mask.grid.differences(cta.grid))
                           + "); the mask must be drawn on the CTA")


def _small_region(grid: Grid) -> list[str]:
    """A warning when the processed region is too small to hold a clot in its vessel
    (:data:`MIN_REGION_MM`): a scan of a slice or two is segmented, but its mask (most
    often "no clot") says nothing, and that must not pass unremarked."""
    extent = np.asarray(grid.shape, float) * np.asarray(grid.spacing, float)
    if extent.min() >= MIN_REGION_MM:
        return []
    shown = " x ".join(f"{e:.1f}" for e in extent)
    return [f"the processed region is only {shown} mm (under {MIN_REGION_MM:g} mm along "
            "an axis): too small to hold a clot with the vessel around it, so its mask and "
            "measurements may mean nothing"]


def _coverage(ncct: Volume, grid: Grid, transform) -> float:
    """Fraction of ``grid`` voxels that fall inside the NCCT's field of view."""
    ones = ncct.with_array(np.ones(ncct.shape, np.uint8))
    cov = resample_to_grid(ones, grid, transform=transform, interpolation="nearest",
                           default_value=0)
    return float(np.mean(cov.array))


def _mask_info(mask: Volume | None, out_mask: Volume | None, box0: Box) -> dict:
    if mask is None:
        return {"present": False}
    arr = np.asarray(mask.array) != 0
    total = int(arr.sum())
    inside = int(arr[box0.slices].sum())
    return {"present": True, "clot_voxels": total,
            "clot_voxels_outside_roi": total - inside,
            "clot_cut_by_roi": bool(total - inside > 0),
            "clot_voxels_processed": int(np.count_nonzero(out_mask.array))}


# --- mapping results back ----------------------------------------------------------------
def _record(info: PreprocessRecord | dict) -> PreprocessRecord:
    return info if isinstance(info, PreprocessRecord) else PreprocessRecord.from_dict(info)


def restore_prediction(mask_on_processed_grid: Volume, info: PreprocessRecord | dict
                       ) -> Volume:
    """A uint8 mask on exactly the original CTA grid; ``info``: the case's record or its
    JSON object (:meth:`PreprocessRecord.restore_mask`)."""
    return _record(info).restore_mask(mask_on_processed_grid)


def restore_probability(prob_on_processed_grid: Volume, info: PreprocessRecord | dict,
                        fill: float = 0.0) -> Volume:
    """A float32 map on exactly the original CTA grid; ``info``: the case's record or its
    JSON object (:meth:`PreprocessRecord.restore_prob`)."""
    return _record(info).restore_prob(prob_on_processed_grid, fill)


# --- whole datasets ------------------------------------------------------------------------
def inference_settings_of(data: str | Path) -> PreprocessSettings | None:
    """The preprocessing that ``predict`` must repeat on raw scans for a model trained on
    ``data``: the settings in ``DATA/preprocess.json`` when ``data`` was written by
    ``clotseg preprocess`` (typed, as ``ModelSpec.preprocess`` holds them), else None (the model works on the scans' own grid).

    ``roi: mask`` (crops around the reference clot, for training) cannot be repeated
    without a mask; inference then keeps the registration and spacing and uses the whole
    volume (``roi: none``): the network is fully convolutional, and no clot can fall
    outside a box.
    """
    path = Path(data) / "preprocess.json"
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())["settings"]
        parsed = PreprocessSettings.from_dict(settings)
    except (json.JSONDecodeError, KeyError, TypeError, UsageError) as exc:
        raise ClotsegError(f"{path}: not a valid preprocessing record ({exc})") from None
    if parsed.roi == "mask":
        parsed.roi = "none"
    return parsed


def preprocess_dataset(data: str | Path, out: str | Path,
                       settings: PreprocessSettings | None = None, *,
                       spacing_npy: tuple[float, float, float] | None = None,
                       progress: bool = True) -> int:
    """Preprocess every case of ``data`` (any layout) into a case-folder dataset ``out``.

    Writes ``OUT/<case>/{cta,ncct}.nii.gz``, ``clot.nii.gz`` when the case has a mask,
    ``OUT/<case>/preprocess.json`` (the case's :class:`PreprocessRecord`), and ``OUT/preprocess.json`` (the
    settings, per-case alignment and warnings, failures). A case that fails is reported
    (file and reason) and skipped; the exit code is 1 when any case failed, else 0.
    """
    from clotseg.io.atomic import write_text
    from clotseg.io.layouts import discover
    from clotseg.io.readers import write_volume

    settings = settings or PreprocessSettings()
    data, out = Path(data), Path(out)
    _check_paths(data, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = discover(data, spacing=spacing_npy)
    dataset_warnings = [str(w.message) for w in caught]
    for w in dataset_warnings:
        print(f"warning: {w}", file=sys.stderr)
    if len(index) == 0:
        raise ClotsegError(f"{data}: no cases found")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"data": str(data), "layout": index.layout,
                     "settings": settings.to_dict(), "cases": {}, "failed": {},
                     "warnings": dataset_warnings}
    cases = index.cases
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(cases, desc="preprocess", unit="case")
        cases = bar
    say = bar.write if bar is not None else (lambda s: print(s, file=sys.stderr))
    for case in cases:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                vols = case.load()
                _require_both(vols)
                pc = preprocess_case(vols.cta, vols.ncct, vols.mask, settings)
                folder = out / case.case_id
                write_volume(pc.cta, folder / "cta.nii.gz")
                write_volume(pc.ncct, folder / "ncct.nii.gz")
                if pc.mask is not None:
                    write_volume(pc.mask, folder / "clot.nii.gz", mask=True)
                else:
                    (folder / "clot.nii.gz").unlink(missing_ok=True)  # stale from a re-run
                record = pc.record.with_source(
                    case.case_id, {k: str(v) for k, v in case.files.items()})
                write_text(folder / "preprocess.json", record.to_json())
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the rest
                reason = _reason(exc, case)
                summary["failed"][case.case_id] = reason
                say(f"case {case.case_id}: failed: {reason}")
                shutil.rmtree(out / case.case_id, ignore_errors=True)
                continue
        notes = sorted({str(w.message) for w in caught})
        for n in notes:
            say(f"warning: case {case.case_id}: {n}")
        info = record.to_dict()
        reg = info.get("registration") or {}
        summary["cases"][case.case_id] = {
            "shape": info["grid"]["shape"], "spacing": info["grid"]["spacing"],
            "alignment_before": reg.get("alignment_before"),
            "alignment_after": reg.get("alignment_after"),
            "alignment_ok": reg.get("alignment_ok"),
            "transform": reg.get("transform"),
            "ncct_coverage": info["ncct_coverage"],
            "warnings": notes, "seconds": round(time.perf_counter() - t0, 2)}
        write_text(out / "preprocess.json", json.dumps(summary, indent=2))
    write_text(out / "preprocess.json", json.dumps(summary, indent=2))
    n_ok, n_bad = len(summary["cases"]), len(summary["failed"])
    print(f"preprocessed {n_ok} case(s) into {out}" + (f"; {n_bad} failed: "
          + ", ".join(summary["failed"]) if n_bad else ""), file=sys.stderr)
    return 1 if n_bad else 0


def _check_paths(data: Path, out: Path) -> None:
    if not data.exists():
        raise ClotsegError(f"{data}: dataset folder does not exist")
    d, o = data.resolve(), out.resolve()
    if d == o or o in d.parents:
        raise UsageError(f"OUT ({out}) must not be DATA ({data}) or a folder above it: "
                         "inputs could be overwritten")


def _reason(exc: Exception, case) -> str:
    """One line naming the file when the error does not already."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ClotsegError) and any(str(p) in text for p in case.files.values()):
        return text
    where = case.files.get("cta") or next(iter(case.files.values()), None)
    kind = "" if isinstance(exc, ClotsegError) else f"{type(exc).__name__}: "
    return f"{where}: {kind}{text}" if where else f"{kind}{text}"
