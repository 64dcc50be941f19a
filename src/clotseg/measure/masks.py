"""Measuring clots in any folder of masks (``clotseg measure``): manual annotations,
nnU-Net or clotseg predictions. The masks are matched to the cases of a dataset by case
id and measured exactly as ``predict`` measures its own (:func:`measure_case`), so the
columns and numbers are the same; ``max_prob`` is NaN (no probability map).

A mask file is ``<case>.<volume suffix>`` or a 3D Slicer ``<case>.seg.nrrd``; any
non-zero voxel is clot (so label masks, with component *k* = *k*, work too). It must lie
on the CTA's grid; the NCCT is resampled onto that grid when it is not on it already.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, DatasetError, VolumeReadError
from clotseg.io.readers import VOLUME_SUFFIXES, read_volume, strip_suffix, volume_suffix
from clotseg.io.slicer import is_seg_nrrd, read_seg_nrrd, seg_stem
from clotseg.io.volume import Volume


def find_masks(folder: str | Path) -> dict[str, Path]:
    """``case id -> mask file`` in ``folder``; ``<case>_prob.*`` probability maps are
    skipped. With two files for one case, a volume file wins over a ``.seg.nrrd`` and
    ``.nii.gz`` over the other suffixes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: mask folder does not exist")
    found: dict[str, list[tuple[int, Path]]] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if is_seg_nrrd(p):
            case_id, rank = seg_stem(p), len(VOLUME_SUFFIXES)
        elif volume_suffix(p):
            case_id, rank = strip_suffix(p), VOLUME_SUFFIXES.index(volume_suffix(p))
        else:
            continue
        if case_id.endswith("_prob"):
            continue
        found.setdefault(case_id, []).append((rank, p))
    return {cid: min(paths)[1] for cid, paths in found.items()}


def read_mask(path: Path) -> Volume:
    """A mask file as a volume: the clot segment of a ``.seg.nrrd``, else the file."""
    return read_seg_nrrd(path) if is_seg_nrrd(path) else read_volume(path)


@dataclass
class MeasureResult:
    rows: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # case -> "file: reason"
    without_mask: list[str] = field(default_factory=list)  # dataset cases with no mask
    unknown: list[str] = field(default_factory=list)  # masks without a dataset case


def measure_one(case, mask_path: Path) -> list[dict]:
    """The ``clots.csv`` rows of one case's mask."""
    from clotseg.io.cases import load_case
    from clotseg.measure.clots import measure_case, unname_sides
    from clotseg.preprocess.ncct import resample_ncct

    vols = load_case(case)
    mask = read_mask(mask_path)
    ref = vols.reference  # the CTA, or the NCCT of a case without one
    if not mask.grid.same_as(ref.grid):
        what = "CTA" if vols.cta is not None else "NCCT (the case has no CTA)"
        raise ClotsegError(f"{mask_path}: mask grid differs from the {what} grid "
                           f"({'; '.join(mask.grid.differences(ref.grid))}); masks are "
                           f"measured on that grid")
    arr = np.asarray(mask.array)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ClotsegError(f"{mask_path}: mask contains NaN or infinite values")
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        raise ClotsegError(f"{mask_path}: not a mask (fractional values; a probability map?)")
    binary = mask.with_array((arr > 0).astype(np.uint8))
    ncct = vols.ncct
    if vols.cta is not None and ncct is not None:  # as is when on the CTA grid
        ncct = resample_ncct(vols.cta, ncct, None, case.case_id)
    rows = measure_case(case.case_id, binary, vols.cta, ncct)
    return rows if case.orientation_known else unname_sides(rows)


def measure_masks(masks: str | Path, data: str | Path, *,
                  spacing: tuple[float, float, float] | None = None,
                  progress: bool = False) -> MeasureResult:
    """Measure every mask in ``masks`` against its case in ``data`` (any layout)."""
    from clotseg.io.layouts import discover

    files = find_masks(masks)
    index = discover(data, spacing=spacing)
    for problem in index.problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    ids = set(index.case_ids)
    result = MeasureResult(unknown=sorted(set(files) - ids))
    if not set(files) & ids:
        raise DatasetError(f"{masks}: no mask named after a case of {data} (expected "
                           "<case>.nii.gz or <case>.seg.nrrd files)")
    cases = index.cases
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="measure", unit="case")
    for case in cases:
        path = files.get(case.case_id)
        if path is None:
            result.without_mask.append(case.case_id)
            continue
        try:
            result.rows.extend(measure_one(case, path))
        except ClotsegError as exc:
            where = str(exc.path) if isinstance(exc, VolumeReadError) else ""
            text = str(exc)
            result.failed[case.case_id] = (text if not where or where in text
                                           else f"{where}: {text}")
    return result
