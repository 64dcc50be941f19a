"""One case on the ``predict`` path: reading it, writing its masks, and what happened.

The steps :mod:`clotseg.api` runs per case (read → segment → write → measure → preview)
live in two layers: this module reads the scans and writes masks and probabilities with
their geometry checked (inference's business); :mod:`clotseg.api` adds the measurements
and previews and writes the tables. :class:`CaseResult` carries both.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, VolumeReadError
from clotseg.inference.outputs import MASK_SUFFIX, case_formats, write_masks
from clotseg.io.cases import load_case  # also importable from here, as before
from clotseg.io.ongrid import check_grid, cta_grid_on_disk, write_on_grid
from clotseg.io.volume import Grid, Volume


@dataclass
class CaseResult:
    """What happened to one case."""

    case_id: str
    ok: bool
    error: str | None = None  # reason, when not ok
    file: str | None = None  # the offending file, when known
    mask_path: Path | None = None
    prob_path: Path | None = None
    preview_path: Path | None = None
    rows: list[dict] = field(default_factory=list)  # clots.csv rows
    patient: dict | None = None  # cases.csv row (the primary clot)
    dropped: list[dict] = field(default_factory=list)  # removed by the primary-clot rule
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # inside "predict" (clotseg.timing)
    stages_cpu: dict[str, float] = field(default_factory=dict)  # the same, CPU seconds
    mask: Volume | None = None  # kept in memory only when nothing is written
    prob: np.ndarray | None = None
    traceback: str | None = None  # for unexpected errors (a bug to report)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # mask format -> file written
    skipped: bool = False  # outputs already complete (``--continue``)
    qc: dict = field(default_factory=dict)  # qc_score, review_recommended, signals
    inputs: list[str] = field(default_factory=list)  # scans used: ["cta", "ncct"], ["ncct"]


def read_case(case, series: dict[str, str] | None = None):
    """(the case's volumes, the reference grid as stored on disk), after checking that the
    reference scan as read lies on its stored grid. The reference is the CTA, or the NCCT
    of a case without a CTA (its masks are written on the NCCT's grid)."""
    vols = load_case(case, series)
    path = case.cta if vols.cta is not None else case.ncct
    disk = cta_grid_on_disk(path, vols.reference)
    check_grid(vols.reference.grid, disk, f"{path} (as read)")
    return vols, disk


def ncct_on_cta_grid(cta: Volume, ncct: Volume, case_id: str = "case",
                     transform: dict | None = None) -> Volume:
    """The NCCT on the CTA grid: as is when it shares it (and no ``transform`` is given),
    else resampled (linear, −1000 HU outside the NCCT). ``transform`` maps CTA points to
    NCCT points (a registration's result). To get the registration a model's
    preprocessing would apply, use :func:`clotseg.preprocess.pipeline.ncct_on_cta_grid`."""
    from clotseg.preprocess.ncct import resample_ncct

    return resample_ncct(cta, ncct, transform, case_id)


def write_case(res: CaseResult, mask: Volume, prob: np.ndarray, cta: Grid, out: Path,
               save_prob: bool, case=None, series: dict[str, str] | None = None,
               masks: dict | None = None) -> None:
    """Write the mask in every format asked for (``masks``: ``formats``, ``labels``) and,
    with ``save_prob``, the probability, all checked against the CTA grid ``cta``."""
    masks = masks or {}
    formats = case_formats(masks.get("formats"), case)
    res.paths = write_masks(mask, cta, out, case, formats, labels=masks.get("labels", False),
                            series=series, auto_dicom_seg=not masks.get("formats"))
    res.mask_path = next(iter(res.paths.values()))
    if save_prob:
        vol = mask.with_array(np.asarray(prob, dtype=np.float32))
        res.prob_path = write_on_grid(vol, out / f"{res.case_id}_prob{MASK_SUFFIX}", cta,
                                      mask=False)


def reason(exc: ClotsegError, case_id: str) -> tuple[str, str | None]:
    """(reason without a repeated case prefix, offending file if known)."""
    text = str(exc)
    prefix = f"case {case_id}: "
    if text.startswith(prefix):
        text = text[len(prefix):]
    file = str(exc.path) if isinstance(exc, VolumeReadError) else None
    return text, file


class Timer:
    """Adds the seconds of each named step into a dictionary (and, with ``cpu``, the
    process's CPU seconds into another)."""

    def __init__(self, seconds: dict[str, float], cpu: dict[str, float] | None = None):
        self.seconds, self.cpu = seconds, cpu

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t0
            if self.cpu is not None:
                self.cpu[step] = self.cpu.get(step, 0.0) + time.process_time() - c0
