"""What ``predict`` writes per case, in which formats, and when a case counts as done.

Mask formats (``predict --format``):

* ``nii.gz`` (default): ``<case>.nii.gz``, uint8 on the CTA grid; with ``--labels`` clot
  component *k* has value *k*, the ``component`` of its ``clots.csv`` row.
* ``seg.nrrd``: ``<case>.seg.nrrd``, a 3D Slicer segmentation with one segment "clot".
* ``dicom-seg``: ``<case>.seg.dcm``, a DICOM Segmentation referencing the CTA series
  (only when the CTA was read from DICOM). Added automatically when the CTA came from
  DICOM and highdicom is installed.

Every file is checked to lie on the CTA grid before it gets its final name (volume
formats: read back from the header, :func:`clotseg.io.ongrid.write_on_grid`; DICOM-SEG:
frames placed on the CTA slices). The grid helpers live in :mod:`clotseg.io.ongrid`; their
names are re-exported here for existing imports.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path
from clotseg.io.ongrid import check_grid, cta_grid_on_disk, file_grid, write_on_grid
from clotseg.io.volume import Grid, Volume

__all__ = ["DEFAULT_FORMAT", "FORMATS", "MASK_SUFFIX", "case_formats", "check_grid",
           "component_labels", "cta_grid_on_disk", "expected_files", "file_grid", "part_of",
           "previous_rows", "write_masks", "write_on_grid"]

#: Format name -> file name ending of ``<case><ending>``.
FORMATS = {"nii.gz": ".nii.gz", "seg.nrrd": ".seg.nrrd", "dicom-seg": ".seg.dcm"}
DEFAULT_FORMAT = "nii.gz"
MASK_SUFFIX = ".nii.gz"


def case_formats(requested: list[str] | tuple[str, ...] | None, case) -> list[str]:
    """The formats to write for ``case``: those asked for (default ``nii.gz``), plus
    ``dicom-seg`` when nothing was asked for and the CTA is a DICOM series and highdicom is
    installed."""
    from clotseg.io.dicom_seg import highdicom_available

    formats = list(dict.fromkeys(requested or [DEFAULT_FORMAT]))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ClotsegError(f"unknown output format {unknown[0]!r} (choose from "
                           f"{', '.join(FORMATS)})")
    if (not requested and _cta_is_dicom(case) and highdicom_available()
            and "dicom-seg" not in formats):
        formats.append("dicom-seg")
    return formats


def _cta_is_dicom(case) -> bool:
    return case.cta is not None and Path(case.cta).is_dir()


def expected_files(out: Path, case, formats: list[str] | tuple[str, ...] | None, *,
                   save_prob: bool = False, preview: bool = False) -> list[Path]:
    """Every file a finished case leaves in ``out`` (what ``--continue`` looks for)."""
    files = [out / f"{case.case_id}{FORMATS[f]}" for f in case_formats(formats, case)]
    if save_prob:
        files.append(out / f"{case.case_id}_prob.nii.gz")
    if preview:
        files.append(out / f"{case.case_id}.png")
    return files


def component_labels(mask: Volume) -> Volume:
    """Clot component *k* (numbered as ``clots.csv`` numbers them) has value *k*; uint8,
    or uint16 beyond 255 components."""
    from clotseg.masks import component_labels as label

    labels, n = label(np.asarray(mask.array))
    return mask.with_array(labels.astype(np.uint8 if n < 256 else np.uint16))


def write_masks(mask: Volume, cta: Grid, out: Path, case, formats: list[str], *,
                labels: bool = False, series: dict[str, str] | None = None,
                auto_dicom_seg: bool = False) -> dict[str, Path]:
    """Write ``mask`` (uint8 0/1 on the CTA grid) in every format; returns format -> path.
    ``auto_dicom_seg``: the DICOM-SEG was added automatically, so its failure only warns."""
    paths = {}
    for fmt in formats:
        path = out / f"{case.case_id}{FORMATS[fmt]}"
        if fmt == "nii.gz":
            vol = component_labels(mask) if labels else mask
            paths[fmt] = write_on_grid(vol, path, cta, mask=vol.array.dtype == np.uint8)
        elif fmt == "seg.nrrd":
            from clotseg.io.slicer import write_seg_nrrd

            check_grid(mask.grid, cta, str(path))
            with atomic_path(path) as tmp:  # the ".seg.nrrd" name is kept by the final rename
                write_seg_nrrd(mask, tmp)
                check_grid(file_grid(tmp), cta, str(path))
            paths[fmt] = path
        elif auto_dicom_seg:  # not asked for: a failure is a warning, the mask stands
            try:
                paths[fmt] = _write_dicom_seg(mask, cta, path, case, series or {})
            except Exception as exc:  # noqa: BLE001 - any highdicom failure
                warnings.warn(f"{path}: DICOM-SEG not written ({exc})", UserWarning,
                              stacklevel=2)
        else:
            paths[fmt] = _write_dicom_seg(mask, cta, path, case, series or {})
    return paths


def _write_dicom_seg(mask: Volume, cta: Grid, path: Path, case, series: dict[str, str]
                     ) -> Path:
    from clotseg.io.dicom_seg import cta_series_files, write_dicom_seg

    if not _cta_is_dicom(case):
        raise ClotsegError(f"{path}: DICOM-SEG needs a CTA read from DICOM (this one is "
                           f"{case.cta or 'absent: the case has only an NCCT'})")
    check_grid(mask.grid, cta, str(path))
    return write_dicom_seg(mask, cta_series_files(Path(case.cta), series.get("cta")), path)


def previous_rows(out: Path, stem: str = "clots") -> dict[str, list[dict]]:
    """``<stem>.csv`` rows already in ``out`` (and in per-part ``<stem>.part*.csv``
    files), by case, as text: what ``--continue`` keeps for the cases it skips
    (``clots`` and ``cases`` tables)."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(out.glob(f"{stem}*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("case_id"):
                    rows.setdefault(row["case_id"], [])
                    if row not in rows[row["case_id"]]:
                        rows[row["case_id"]].append(row)
    return rows


def part_of(cases: list, num_parts: int, part_id: int) -> list:
    """Every ``num_parts``-th case starting at ``part_id`` (the split nnU-Net uses for job
    arrays): the parts are disjoint and together hold every case."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ClotsegError(f"--part-id must be in 0..{num_parts - 1} with --num-parts "
                           f"{num_parts}, got {part_id}")
    return list(cases)[part_id::num_parts]
