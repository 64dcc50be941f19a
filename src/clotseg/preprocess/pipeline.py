"""The preprocessing pipeline: register NCCT to CTA, resample, crop an ROI — reversibly.

The original research code did these steps by hand in 3D Slicer and kept no record, so its
masks could not be put back onto the patient's scan. Here every case's ``info`` (written
as ``preprocess.json`` next to the outputs) holds the original CTA grid, the resampled
grid, the crop box and the NCCT transform, and :func:`restore_prediction` maps a mask from
the processed grid back onto *exactly* the original CTA grid.

Order of operations for one case (CTA is the reference; nothing moves the CTA):

1. NCCT → CTA rigid registration (optional; otherwise the identity), giving transform T.
2. Target grid G1: the CTA grid, or the same box at the requested spacing.
3. ROI box on the CTA (:func:`clotseg.preprocess.roi.roi_box`), expressed on G1; the final
   grid is that sub-box of G1.
4. CTA, NCCT (through T) and mask are sampled once, directly onto the final grid (one
   interpolation per image; no resampling at all when the spacing is unchanged and the
   NCCT already lies on the CTA grid — then it is an exact crop).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, UsageError
from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.resample import (
    grid_from_dict,
    grid_to_dict,
    grid_with_spacing,
    resample_to_grid,
)
from clotseg.preprocess.roi import Box, crop, crop_grid, roi_box, uncrop
from clotseg.timing import stage

INFO_FORMAT = 1
AIR_HU = -1000.0
ROI_MODES = ("auto", "mask", "none")


@dataclass
class PreprocessSettings:
    """What ``clotseg preprocess`` does to each case.

    ``spacing`` (mm) is given for the patient's x (left-right), y (front-back) and z
    (up-down) axes and applied to the array axis closest to each, so every case gets the
    same physical resolution whatever its stored orientation; None keeps the CTA's spacing.
    ``roi_size_mm`` is a cube edge or (x, y, z) lengths; ``roi_margin_mm`` is added on
    every side.
    """

    register: bool = True
    spacing: tuple[float, float, float] | None = None
    roi: str = "auto"
    roi_size_mm: float | tuple[float, float, float] = 120.0
    roi_margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.roi not in ROI_MODES:
            raise UsageError(f"--roi must be one of {', '.join(ROI_MODES)}, got {self.roi!r}")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or any(not np.isfinite(s) or s <= 0 for s in sp):
                raise UsageError(f"--spacing needs three positive numbers (mm), got {sp}")
            self.spacing = sp
        size = np.atleast_1d(np.asarray(self.roi_size_mm, dtype=float))
        if size.size not in (1, 3) or np.any(~np.isfinite(size)) or np.any(size <= 0):
            raise UsageError(f"--roi-size needs one or three positive lengths (mm), got "
                             f"{self.roi_size_mm}")
        self.roi_size_mm = float(size[0]) if size.size == 1 else tuple(float(s) for s in size)
        if not np.isfinite(self.roi_margin_mm) or self.roi_margin_mm < 0:
            raise UsageError(f"--roi-margin must be >= 0 mm, got {self.roi_margin_mm}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spacing"] = list(self.spacing) if self.spacing else None
        if isinstance(self.roi_size_mm, tuple):
            d["roi_size_mm"] = list(self.roi_size_mm)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSettings:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in known}
        if kw.get("spacing") is not None:
            kw["spacing"] = tuple(kw["spacing"])
        if isinstance(kw.get("roi_size_mm"), list):
            kw["roi_size_mm"] = tuple(kw["roi_size_mm"])
        return cls(**kw)


@dataclass
class PreprocessedCase:
    """Volumes on the processed grid and the record needed to map results back."""

    cta: Volume
    ncct: Volume
    mask: Volume | None
    info: dict = field(default_factory=dict)


def spacing_for_grid(grid: Grid, xyz) -> tuple[float, float, float]:
    """Per-array-axis spacing from patient-axis (x, y, z) spacing."""
    patient_axis = np.argmax(np.abs(grid.direction_matrix), axis=0)
    xyz = np.asarray(xyz, dtype=float)
    return tuple(float(xyz[a]) for a in patient_axis)


def box_on_grid(box: Box, grid: Grid, target: Grid) -> Box:
    """The smallest box of ``target`` covering ``box`` of ``grid`` (voxel edges included)."""
    lo = np.asarray(box.start, float) - 0.5
    hi = np.asarray(box.stop, float) - 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])
    idx = target.physical_to_index(grid.index_to_physical(corners))
    start = np.floor(idx.min(0) + 0.5 + 1e-6).astype(int)
    stop = np.ceil(idx.max(0) + 0.5 - 1e-6).astype(int)
    shape = np.asarray(target.shape)
    start = np.clip(start, 0, shape - 1)
    stop = np.clip(np.maximum(stop, start + 1), 1, shape)
    return Box(tuple(start), tuple(stop))


def preprocess_case(cta: Volume, ncct: Volume, mask: Volume | None,
                    settings: PreprocessSettings | None = None) -> PreprocessedCase:
    """Register, resample and crop one case (module docstring); see :class:`PreprocessedCase`.

    Problems the user must know about (poor alignment, partial NCCT coverage, an ROI that
    cuts the clot) are both warned (``UserWarning``) and listed in ``info["warnings"]``.
    """
    settings = settings or PreprocessSettings()
    notes: list[str] = []
    _check_inputs(cta, ncct, mask)
    g1 = cta.grid if settings.spacing is None else grid_with_spacing(
        cta.grid, spacing_for_grid(cta.grid, settings.spacing))
    resampled = not g1.same_as(cta.grid, atol_mm=1e-6)
    with stage("roi"):
        box0 = roi_box(cta, mode=settings.roi, mask=mask, size_mm=settings.roi_size_mm,
                       margin_mm=settings.roi_margin_mm)
    box1 = box_on_grid(box0, cta.grid, g1) if resampled else box0
    final = crop_grid(g1, box1)
    # The NCCT is resampled straight onto what is kept (the ROI), never onto the whole
    # CTA grid first: at clinical size that would be a second full-resolution volume.
    with stage("register"):
        transform, reg_info, moved = _register(cta, ncct, settings, notes,
                                               crop_grid(cta.grid, box0))
    with stage("resample"):
        if resampled:
            out_cta = resample_to_grid(cta, final, interpolation="linear", default_value=AIR_HU)
            out_ncct = resample_to_grid(ncct, final, transform=transform, interpolation="linear",
                                        default_value=AIR_HU)
            out_mask = None if mask is None else resample_to_grid(mask, final,
                                                                  interpolation="label")
        else:
            out_cta = crop(cta, box0)
            out_ncct = moved if moved.grid.same_as(out_cta.grid) else crop(moved, box0)
            out_mask = None if mask is None else crop(mask.with_array(
                (np.asarray(mask.array) > 0).astype(np.uint8)), box0)
    with stage("register"):
        coverage = _coverage(ncct, final, transform)
    if coverage < 0.95:
        notes.append(f"NCCT covers only {100 * coverage:.0f} % of the processed CTA region "
                     f"(the rest is filled with {AIR_HU:g} HU)")
    mask_info = _mask_info(mask, out_mask, box0)
    if mask_info.get("clot_cut_by_roi"):
        notes.append(f"the ROI cuts the clot: {mask_info['clot_voxels_outside_roi']} clot "
                     "voxel(s) lie outside it (enlarge --roi-size or use --roi mask)")
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
    info = {
        "format": INFO_FORMAT,
        "settings": settings.to_dict(),
        "original_grid": grid_to_dict(cta.grid),
        "ncct_original_grid": grid_to_dict(ncct.grid),
        "resampled_grid": grid_to_dict(g1),
        "resampled": bool(resampled),
        "crop_box": box1.to_dict(),
        "crop_box_original": box0.to_dict(),
        "grid": grid_to_dict(final),
        "roi_centre_mm": [round(float(v), 3) for v in final.index_to_physical(
            (np.asarray(final.shape) - 1) / 2.0)[0]],
        "registration": reg_info,
        "ncct_coverage": round(float(coverage), 4),
        "mask": mask_info,
        "warnings": notes,
    }
    return PreprocessedCase(out_cta, out_ncct, out_mask, info)


def _check_inputs(cta: Volume, ncct: Volume, mask: Volume | None) -> None:
    if not ncct.grid.overlaps(cta.grid):
        raise ClotsegError("NCCT does not overlap the CTA in patient space (wrong file or "
                           "broken geometry)")
    if mask is not None and not mask.grid.same_as(cta.grid):
        raise ClotsegError("clot mask grid differs from the CTA grid ("
                           + "; ".join(mask.grid.differences(cta.grid))
                           + "); the mask must be drawn on the CTA")


def _register(cta: Volume, ncct: Volume, settings: PreprocessSettings, notes: list[str],
              target: Grid | None = None):
    """(transform or None, registration info or None, NCCT on ``target``: a part of the
    CTA grid, default all of it)."""
    target = target or cta.grid
    if not settings.register:
        if ncct.grid.same_as(cta.grid):
            return None, None, ncct
        moved = resample_to_grid(ncct, target, interpolation="linear", default_value=AIR_HU)
        return None, None, moved
    from clotseg.preprocess.register import register_rigid

    try:
        res = register_rigid(cta, ncct, warn=False, moved_grid=target)
    except ValueError as exc:
        raise ClotsegError(str(exc)) from None
    if not res.alignment_ok:
        notes.append(f"NCCT-to-CTA registration: {res.message}")
    return res.transform, res.info(), res.moved


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
def _processed_and_original(vol: Volume, info: dict) -> tuple[Grid, Grid]:
    if int(info.get("format", 0)) != INFO_FORMAT:
        raise ClotsegError(f"unsupported preprocess info format {info.get('format')!r}")
    processed = grid_from_dict(info["grid"])
    if not vol.grid.same_as(processed):
        raise ClotsegError("volume is not on the processed grid of this case ("
                           + "; ".join(vol.grid.differences(processed)) + ")")
    return processed, grid_from_dict(info["original_grid"])


def _covering_box(grid: Grid, target: Grid) -> Box:
    """Box of ``target`` holding every voxel of ``target`` that ``grid`` reaches."""
    return box_on_grid(Box.full(grid.shape), grid, target)


def _restore(vol: Volume, info: dict, interpolation: str, fill) -> Volume:
    processed, original = _processed_and_original(vol, info)
    if not info.get("resampled", True):
        box = Box.from_dict(info["crop_box"])
        out = uncrop(Volume.on_grid(np.asarray(vol.array), crop_grid(original, box)), box,
                     original, fill=fill)
    else:
        # Resample only onto the part of the original grid that the processed box covers,
        # then place it (the rest is outside the ROI: ``fill``). Equivalent to uncropping
        # onto the resampled grid and resampling the whole of it, at a fraction of the cost.
        box = _covering_box(processed, original)
        part = resample_to_grid(vol, crop_grid(original, box), interpolation=interpolation,
                                default_value=fill)
        out = uncrop(part, box, original, fill=fill)
    if not out.grid.same_as(original, atol_mm=1e-6):  # geometry is the contract
        raise ClotsegError("internal error: restored volume is not on the original CTA grid")
    return Volume.on_grid(np.asarray(out.array), original)


def restore_prediction(mask_on_processed_grid: Volume, info: dict) -> Volume:
    """A uint8 mask on exactly the original CTA grid (uncrop, then label-aware resample)."""
    binary = mask_on_processed_grid.with_array(
        (np.asarray(mask_on_processed_grid.array) > 0).astype(np.uint8))
    out = _restore(binary, info, "label", 0)
    return out.with_array(np.asarray(out.array).astype(np.uint8))


def restore_probability(prob_on_processed_grid: Volume, info: dict, fill: float = 0.0
                        ) -> Volume:
    """A float32 map (e.g. clot probability) on exactly the original CTA grid (linear)."""
    vol = prob_on_processed_grid.with_array(
        np.asarray(prob_on_processed_grid.array, dtype=np.float32))
    return _restore(vol, info, "linear", float(fill))


# --- whole datasets ------------------------------------------------------------------------
def inference_settings_of(data: str | Path) -> dict | None:
    """The preprocessing that ``predict`` must repeat on raw scans for a model trained on
    ``data``: the settings in ``DATA/preprocess.json`` when ``data`` was written by
    ``clotseg preprocess``, else None (the model works on the scans' own grid).

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
    return parsed.to_dict()


def preprocess_dataset(data: str | Path, out: str | Path,
                       settings: PreprocessSettings | None = None, *,
                       spacing_npy: tuple[float, float, float] | None = None,
                       progress: bool = True) -> int:
    """Preprocess every case of ``data`` (any layout) into a case-folder dataset ``out``.

    Writes ``OUT/<case>/{cta,ncct}.nii.gz``, ``clot.nii.gz`` when the case has a mask,
    ``OUT/<case>/preprocess.json`` (the case's ``info``), and ``OUT/preprocess.json`` (the
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
                pc = preprocess_case(vols.cta, vols.ncct, vols.mask, settings)
                folder = out / case.case_id
                write_volume(pc.cta, folder / "cta.nii.gz")
                write_volume(pc.ncct, folder / "ncct.nii.gz")
                if pc.mask is not None:
                    write_volume(pc.mask, folder / "clot.nii.gz", mask=True)
                else:
                    (folder / "clot.nii.gz").unlink(missing_ok=True)  # stale from a re-run
                pc.info["case_id"] = case.case_id
                pc.info["source"] = {k: str(v) for k, v in case.files.items()}
                write_text(folder / "preprocess.json", json.dumps(pc.info, indent=2))
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the rest
                reason = _reason(exc, case)
                summary["failed"][case.case_id] = reason
                say(f"case {case.case_id}: failed: {reason}")
                shutil.rmtree(out / case.case_id, ignore_errors=True)
                continue
        notes = sorted({str(w.message) for w in caught})
        for n in notes:
            say(f"warning: case {case.case_id}: {n}")
        reg = pc.info.get("registration") or {}
        summary["cases"][case.case_id] = {
            "shape": pc.info["grid"]["shape"], "spacing": pc.info["grid"]["spacing"],
            "alignment_before": reg.get("alignment_before"),
            "alignment_after": reg.get("alignment_after"),
            "alignment_ok": reg.get("alignment_ok"),
            "transform": reg.get("transform"),
            "ncct_coverage": pc.info["ncct_coverage"],
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
