"""Dataset validation behind ``clotseg check``: every problem, named with its case and file.

Each case is read on its own (never the whole dataset at once). Problems have a level:
``error`` (the case cannot be used as it is) or ``warning`` (usable, but look at it, e.g.
an NCCT that only needs resampling onto the CTA grid, or an empty mask).

A case with only a CTA or only an NCCT is a ``warning``: ``predict`` takes it (the model
sees the absent scan as missing), but training, ``preprocess`` and ``export-nnunet``
need both scans and refuse it. A case with neither is an ``error`` (found at discovery).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.layouts import CaseRef, DatasetIndex
from clotseg.io.values import hu_offset_note
from clotseg.io.volume import Volume

#: Plausible CT range in HU. Scanners store -1024..3071; padding values go down to -3024.
HU_MIN, HU_MAX = -3100.0, 4000.0


@dataclass(frozen=True)
class Problem:
    """One finding about a dataset: level, case, file (or folder) and reason."""

    level: str  # "error" | "warning"
    case_id: str
    path: str
    reason: str

    def line(self) -> str:
        return f"{self.level.upper():7s} {self.case_id}: {self.path}: {self.reason}"


def check_dataset(index: DatasetIndex, *, progress: bool = False) -> Iterator[Problem]:
    """Yield every problem of a dataset, one case after the other."""
    for msg in index.problems:
        yield Problem("warning", "-", str(index.root), msg)
    yield from _duplicate_ids(index)
    cases = index.cases
    if not cases:
        yield Problem("error", "-", str(index.root), "no cases found")
        return
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="checking", unit="case", leave=False)
    for case in cases:
        yield from check_case(case)


def _duplicate_ids(index: DatasetIndex) -> Iterator[Problem]:
    seen: dict[str, CaseRef] = {}
    for case in index.cases:
        key = case.case_id.lower()
        if key in seen:
            first = seen[key]
            yield Problem("error", case.case_id, str(case.cta or case.ncct or index.root),
                          f"duplicate case id (also {first.case_id} at "
                          f"{first.cta or first.ncct}); case ids must be unique")
        else:
            seen[key] = case


def check_case(case: CaseRef) -> Iterator[Problem]:
    """Yield the problems of one case."""
    cid = case.case_id
    for msg in case.problems:
        path, _, reason = msg.partition(": ")
        yield Problem("error", cid, path, reason)
    vols: dict[str, Volume] = {}
    for name, path in case.files.items():
        failed = None
        with warnings.catch_warnings(record=True) as caught:  # e.g. an ambiguous header
            warnings.simplefilter("always")
            try:
                vols[name] = case.read(name)
            except ClotsegError as exc:
                failed = getattr(exc, "reason", str(exc))
        if failed is not None:
            yield Problem("error", cid, str(path), failed)
        for w in caught:
            yield Problem("warning", cid, str(path), str(w.message).removeprefix(f"{path}: "))
    for name in ("cta", "ncct"):
        if name in vols:
            yield from _check_spacing(cid, str(case.files[name]), vols[name])
            yield from _check_intensity(cid, str(case.files[name]), name, vols[name])
    if "mask" in vols:
        yield from _check_mask(cid, str(case.files["mask"]), vols["mask"])
    if "cta" in vols and "ncct" in vols:
        from clotseg.io.values import distinct_scans

        try:
            distinct_scans(vols["cta"], vols["ncct"], case.files["ncct"])
        except ClotsegError as exc:
            yield Problem("error", cid, str(case.files["ncct"]), getattr(exc, "reason", str(exc)))
    yield from _check_one_modality(case)
    cta = vols.get("cta")
    if cta is None:
        if case.cta is None and "ncct" in vols and "mask" in vols:  # masks lie on the NCCT
            yield from _check_grid(cid, str(case.files["mask"]), "mask", vols["mask"],
                                   vols["ncct"], resample_ok=False, on="NCCT")
        return
    if "ncct" in vols:
        yield from _check_grid(cid, str(case.files["ncct"]), "NCCT", vols["ncct"], cta,
                               resample_ok=True)
        yield from _check_swap(cid, str(case.files["ncct"]), vols["ncct"], cta)
    if "mask" in vols:
        yield from _check_grid(cid, str(case.files["mask"]), "mask", vols["mask"], cta,
                               resample_ok=False)


def _check_swap(cid: str, path: str, ncct: Volume, cta: Volume) -> Iterator[Problem]:
    """A warning when the NCCT holds the contrast and the CTA does not (files swapped)."""
    from clotseg.preprocess.contrast import swap_note

    if not ncct.grid.overlaps(cta.grid):
        return  # an error, reported above
    note = swap_note(cta, ncct)
    if note:
        yield Problem("warning", cid, path, note)


def _check_one_modality(case: CaseRef) -> Iterator[Problem]:
    """A warning for a case with one scan: usable by ``predict``, not for training."""
    if case.problems or len(case.missing) != 1:
        return
    gone = case.missing[0].upper()
    have = "NCCT" if gone == "CTA" else "CTA"
    where = case.cta if case.cta is not None else case.ncct
    article = "an" if have == "NCCT" else "a"
    yield Problem("warning", case.case_id, str(where),
                  f"only {article} {have}, no {gone}: `predict` segments it from the {have} alone "
                  f"(empty values for what needs the {gone}); training needs both scans")


def _check_spacing(cid: str, path: str, vol: Volume) -> Iterator[Problem]:
    from clotseg.io.values import spacing_note

    note = spacing_note(vol)
    if note:
        yield Problem("warning", cid, path, note)


def _check_intensity(cid: str, path: str, name: str, vol: Volume) -> Iterator[Problem]:
    arr = np.asarray(vol.array)
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        n = int(arr.size - finite.sum())
        yield Problem("error", cid, path, f"{n} non-finite voxel(s) (NaN or inf)")
        arr = arr[finite]
    if arr.size == 0:
        return
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo < 1e-6:
        yield Problem("error", cid, path, f"constant image (all voxels {lo:g})")
        return
    label = name.upper()
    if lo >= -0.01 and hi <= 1.01:
        yield Problem("error", cid, path, f"{label} values lie in [{lo:.3g}, {hi:.3g}]: looks "
                      "scaled to 0–1, not Hounsfield units")
    elif vol.array.dtype == np.uint8 or (lo >= 0 and hi <= 255 and _integral(arr)):
        yield Problem("error", cid, path, f"{label} values lie in [{lo:g}, {hi:g}]: looks like "
                      "an 8-bit 0–255 image, not Hounsfield units")
    elif lo < HU_MIN or hi > HU_MAX:
        yield Problem("error", cid, path, f"{label} values [{lo:g}, {hi:g}] outside the CT "
                      f"range [{HU_MIN:g}, {HU_MAX:g}] HU: missing rescale slope/intercept?")
    elif shifted := hu_offset_note(arr, label):
        yield Problem("error", cid, path, shifted)
    elif name == "cta" and float(np.percentile(arr, 99.9)) < 100.0:
        yield Problem("warning", cid, path, "no contrast-enhanced voxels (99.9th percentile "
                      "< 100 HU): is this really a CTA?")


def _integral(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iu" or bool(np.all(np.mod(arr[:: max(1, arr.size // 100000)],
                                                         1) == 0))


def _check_mask(cid: str, path: str, vol: Volume) -> Iterator[Problem]:
    arr = np.asarray(vol.array)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        yield Problem("error", cid, path, "mask has non-finite values")
        return
    values = np.unique(arr)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if values.size > 6 else "")
        yield Problem("error", cid, path, f"mask is not binary (values {shown}; expected 0/1)")
    elif values.size == 1 and values[0] == 0:
        yield Problem("warning", cid, path, "mask is empty (no clot drawn): fine for a "
                      "clot-free case, otherwise a missing annotation")


def _check_grid(cid: str, path: str, label: str, vol: Volume, cta: Volume,
                *, resample_ok: bool, on: str = "CTA") -> Iterator[Problem]:
    diffs = vol.grid.differences(cta.grid)
    if not diffs:
        return
    what = "; ".join(diffs)
    if not resample_ok:
        extra = "" if vol.grid.overlaps(cta.grid) else " and does not even overlap it"
        yield Problem("error", cid, path, f"{label} grid differs from the {on} grid ({what})"
                      f"{extra}; the mask must be drawn on the {on}")
    elif not vol.grid.overlaps(cta.grid):
        yield Problem("error", cid, path, f"{label} does not overlap the CTA in patient space "
                      f"({what}): wrong file or broken geometry")
    else:
        yield Problem("warning", cid, path, f"{label} grid differs from the CTA grid ({what}); "
                      "`clotseg preprocess` resamples it")


def summarize(problems: list[Problem], n_cases: int) -> str:
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    bad = len({p.case_id for p in problems if p.level == "error"})
    return (f"{n_cases} case(s) checked: {errors} error(s) in {bad} case(s), "
            f"{warnings} warning(s)")


def write_report(path: Path, problems: list[Problem]) -> None:
    """Write problems as CSV (level, case_id, path, reason)."""
    import csv
    import io

    from clotseg.io.atomic import write_text
    from clotseg.io.tables import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["level", "case_id", "path", "reason"])
    for p in problems:
        w.writerow([csv_cell(v) for v in (p.level, p.case_id, p.path, p.reason)])
    write_text(path, buf.getvalue())
