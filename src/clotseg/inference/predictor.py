"""Predicting clot masks for cases, always on exactly the CTA's grid.

:class:`Predictor` segments one case in memory; :func:`predict_cases` runs it over a
dataset and writes ``OUT/<case>.nii.gz`` (uint8 mask), optionally ``<case>_prob.nii.gz``
and ``<case>.png``, plus ``clots.csv`` and ``predict.json``, both rewritten (atomically)
after every case so that an interrupted run leaves valid files. A case that cannot be
read or segmented is recorded with the file and the reason, and the others go on.

Every volume written is checked before it gets its final name: the file as written is
read back (header only) and its size, spacing, origin and direction must equal those of
the CTA as stored on disk, else nothing is written for that case.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback as tb
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clotseg.devices import device_name as resolve_device  # one rule for train and predict
from clotseg.errors import ClotsegError, VolumeReadError
from clotseg.inference.engine import cpu_has_native_bf16, resolve_precision
from clotseg.inference.ensemble import InferenceOptions, Member, ensemble_probability, load_member
from clotseg.inference.postprocess import postprocess
from clotseg.io.atomic import atomic_path, write_text
from clotseg.io.volume import Grid, Volume
from clotseg.masks import bounding_box
from clotseg.timing import collect, stage

MASK_SUFFIX = ".nii.gz"


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class Segmentation:
    """The result for one case, all on the CTA grid."""

    mask: Volume  # uint8
    prob: np.ndarray  # float32, same shape as the CTA array
    ncct: Volume  # the NCCT on the CTA grid (what measurements and previews use)


@dataclass
class Predictor:
    """Trained run(s) plus inference and post-processing settings.

    Post-processing defaults (threshold, minimum clot volume) come from the first run's
    ``model.json``; fold runs of one training share them.
    """

    members: list[Member]
    options: InferenceOptions = field(default_factory=InferenceOptions)
    threshold: float | None = None  # None: the (first) run's own
    min_component_mm3: float | None = None  # None: the (first) run's own
    keep_largest: bool = False
    num_threads: int | None = None  # CPU threads for torch; None leaves torch's setting
    use_filter: bool = True  # apply the run's learned false-positive filter, if it has one

    @classmethod
    def from_runs(cls, runs, *, device: str = "auto", precision: str = "auto",
                  tta: bool = False, batch_size: int = 16, skip_empty: bool = True,
                  engine: str = "torch", **settings) -> Predictor:
        """Load run folder(s) (several = fold ensemble, probabilities averaged), exported
        ``model.zip`` or ``model.onnx`` files.

        ``engine``: ``torch`` or ``onnx`` (onnxruntime, CPU). ``settings``: ``threshold``,
        ``min_component_mm3``, ``keep_largest``, ``num_threads``.
        """
        runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
        if not runs:
            raise ClotsegError("no run folder given")
        if batch_size < 1:
            raise ClotsegError(f"batch size must be at least 1, got {batch_size}")
        device = resolve_device(device)
        try:
            resolve_precision(device, precision)  # validates the name early
        except ValueError as exc:
            raise ClotsegError(str(exc)) from None
        if precision == "bf16" and device == "cpu" and not cpu_has_native_bf16():
            warnings.warn("this CPU has no bf16 matrix units: bf16 is emulated and slower "
                          "than fp32 here", UserWarning, stacklevel=2)
        if engine not in ("torch", "onnx"):
            raise ClotsegError(f"unknown engine {engine!r} (use torch or onnx)")
        members = [load_member(r, device, engine=engine,
                               num_threads=settings.get("num_threads")) for r in runs]
        opts = InferenceOptions(device, precision, tta, batch_size, skip_empty)
        return cls(members, opts, **settings)

    @property
    def post(self) -> dict:
        """Post-processing actually applied (the first run's defaults filled in)."""
        spec = self.members[0].spec
        return {"threshold": spec.threshold if self.threshold is None else self.threshold,
                "min_component_mm3": (spec.min_component_mm3 if self.min_component_mm3 is None
                                      else self.min_component_mm3),
                "keep_largest": self.keep_largest,
                "component_filter": bool(self.use_filter and spec.component_filter)}

    def describe(self) -> dict:
        """What ``predict.json`` records about the models and settings."""
        import torch

        o = self.options
        return {"runs": [str(m.run) for m in self.members],
                "models": [m.spec.model_name for m in self.members],
                "device": o.device, "precision": resolve_precision(o.device, o.precision),
                "tta": o.tta, "batch_size": o.batch_size,
                "threads": self.num_threads or torch.get_num_threads(), **self.post}

    @contextlib.contextmanager
    def threads(self):
        """Run with ``num_threads`` torch threads, restoring the previous number after."""
        import torch

        before = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def probability(self, cta: Volume, ncct: Volume, case_id: str = "case"
                    ) -> tuple[np.ndarray, Volume]:
        """Clot probability on the CTA grid (mean over runs) and the NCCT on that grid
        (aligned with the registration of a run's preprocessing, if it registers)."""
        # Resampled once: before inference only when a run works on the CTA grid itself,
        # else after it, with the registration that the preprocessing found.
        native = any(not m.spec.preprocess for m in self.members)
        with stage("ncct_on_cta"):
            ncct_on_cta = ncct_on_cta_grid(cta, ncct, case_id) if native else None
        with self.threads():
            res = ensemble_probability(self.members, cta, ncct_on_cta, ncct, self.options,
                                       case_id)
        if res.ncct_transform is not None or ncct_on_cta is None:
            ncct_on_cta = None  # free it before the next full-size copy is made
            with stage("ncct_on_cta"):
                ncct_on_cta = ncct_on_cta_grid(cta, ncct, case_id, res.ncct_transform)
        return res.prob, ncct_on_cta

    def segment(self, cta: Volume, ncct: Volume, case_id: str = "case") -> Segmentation:
        """Mask (uint8, on the CTA grid), probability and NCCT on the CTA grid."""
        prob, ncct_on_cta = self.probability(cta, ncct, case_id)
        p = self.post
        # Post-processed inside the box of non-zero probability (the ROI, or less): what
        # lies outside is 0 and stays 0, components inside are the same either way.
        with stage("postprocess"):
            mask = np.zeros(prob.shape, np.uint8)
            box = bounding_box(prob)
            if box is not None:
                mask[box] = postprocess(prob[box], cta.spacing, threshold=p["threshold"],
                                        min_component_mm3=p["min_component_mm3"],
                                        keep_largest=p["keep_largest"])
            if box is not None and self.component_filter is not None:
                mask[box] = self.component_filter.apply(mask[box], prob[box], cta.spacing)
        return Segmentation(Volume.on_grid(mask, cta.grid), prob, ncct_on_cta)

    @property
    def component_filter(self):
        """The first run's learned false-positive filter (None: none, or turned off)."""
        from clotseg.inference.fp_filter import ComponentFilter

        spec = self.members[0].spec
        if not self.use_filter or not spec.component_filter:
            return None
        try:
            return ComponentFilter.from_dict(spec.component_filter)
        except (TypeError, ValueError) as exc:
            raise ClotsegError(f"{self.members[0].run}/model.json: invalid component_filter "
                               f"({exc})") from None



def ncct_on_cta_grid(cta: Volume, ncct: Volume, case_id: str = "case",
                     transform: dict | None = None) -> Volume:
    """The NCCT on the CTA grid: as is when it shares it (and no ``transform`` is given),
    else resampled (linear, −1000 HU outside the NCCT). ``transform`` maps CTA points to
    NCCT points (a registration's result)."""
    if transform is None and ncct.grid.same_as(cta.grid):
        return ncct
    if not ncct.grid.overlaps(cta.grid):
        raise ClotsegError(f"case {case_id}: NCCT and CTA do not overlap in patient space "
                           "(different patients or broken geometry?)")
    from clotseg.preprocess.resample import resample_to_grid

    return resample_to_grid(ncct, cta.grid, transform=transform, interpolation="linear",
                            default_value=-1000.0)


# --- writing, with the geometry check -----------------------------------------------------


def file_grid(path: str | Path) -> Grid:
    """Geometry stored in a volume file's header (nothing else is read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    size, spacing, origin = reader.GetSize(), reader.GetSpacing(), reader.GetOrigin()
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return Grid(tuple(int(s) for s in size[:3]), tuple(spacing[:3]), tuple(origin[:3]),
                tuple(direction.ravel()))


def cta_grid_on_disk(path: Path | None, loaded: Volume) -> Grid:
    """The CTA's grid as stored: from the file header for volume files, else (DICOM
    series, ``.npy``) the grid it was read with."""
    from clotseg.io.readers import volume_suffix

    if path is not None and path.is_file() and volume_suffix(path):
        return file_grid(path)
    return loaded.grid


def check_grid(grid: Grid, cta: Grid, what: str) -> None:
    """Refuse anything that would not overlay the CTA voxel for voxel."""
    if not grid.same_as(cta):
        raise ClotsegError(f"{what}: grid differs from the CTA's "
                           f"({'; '.join(grid.differences(cta))}); not written")


def write_on_grid(vol: Volume, path: Path, cta: Grid, *, mask: bool) -> Path:
    """Write ``vol`` atomically, after checking that the file as written has exactly the
    CTA's geometry (catches a wrong grid in memory and writer round-off alike)."""
    from clotseg.io.readers import write_volume

    check_grid(vol.grid, cta, str(path))
    with atomic_path(path) as tmp:
        write_volume(vol, tmp, mask=mask)
        check_grid(file_grid(tmp), cta, str(path))
    return path


# --- many cases ---------------------------------------------------------------------------


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
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # inside "predict" (clotseg.timing)
    stages_cpu: dict[str, float] = field(default_factory=dict)  # the same, CPU seconds
    mask: Volume | None = None  # kept in memory only when nothing is written
    prob: np.ndarray | None = None
    traceback: str | None = None  # for unexpected errors (a bug to report)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # mask format -> file written
    skipped: bool = False  # outputs already complete (``--continue``)


def load_case(case, series: dict[str, str] | None = None):
    """Read a case's CTA and NCCT. From a DICOM folder, the series with the UID given in
    ``series`` is read, else the folder's only series, else the one whose description
    says it is this modality (so one folder may hold both)."""
    from clotseg.io.dicom import read_dicom_series
    from clotseg.io.layouts import CaseVolumes

    series = series or {}
    if case.problems:
        raise ClotsegError("; ".join(case.problems))
    vols = {}
    for name in ("cta", "ncct"):
        path = getattr(case, name)
        if path is not None and Path(path).is_dir():
            # A DICOM folder: the series by UID, else the one that is this modality.
            vols[name] = read_dicom_series(path, series.get(name), kind=name)
        else:
            vols[name] = case.read(name)
    from clotseg.io.values import finite_ct

    return CaseVolumes(case.case_id, finite_ct(vols["cta"], case.cta, "CTA"),
                       finite_ct(vols["ncct"], case.ncct, "NCCT"), None)


def predict_case(predictor: Predictor, case, out: Path | None, *, save_prob: bool = False,
                 preview: bool = False, series: dict[str, str] | None = None,
                 formats: list[str] | None = None, labels: bool = False) -> CaseResult:
    """Segment, check, write and measure one case; failures become a failed result.
    Warnings raised on the way are kept in the result and repeated with the case's name.
    ``formats``/``labels``: see :mod:`clotseg.inference.outputs`."""
    res = CaseResult(case.case_id, ok=False)
    with warnings.catch_warnings(record=True) as caught, collect(res.stages, res.stages_cpu):
        warnings.simplefilter("always")
        _predict_case(res, predictor, case, out, save_prob, preview, series,
                      {"formats": formats, "labels": labels})
    for w in caught:
        res.warnings.append(str(w.message))
        warnings.warn(f"case {case.case_id}: {w.message}", UserWarning, stacklevel=2)
    res.seconds["total"] = sum(v for k, v in res.seconds.items() if k != "total")
    return res


def _predict_case(res: CaseResult, predictor: Predictor, case, out: Path | None,
                  save_prob: bool, preview: bool, series: dict[str, str] | None,
                  masks: dict | None = None) -> None:
    t = _Timer(res.seconds, res.stages_cpu)
    try:
        with t("read"):
            vols = load_case(case, series)
            disk = cta_grid_on_disk(case.cta, vols.cta)
            check_grid(vols.cta.grid, disk, f"{case.cta} (as read)")
        with t("predict"):
            seg = predictor.segment(vols.cta, vols.ncct, case.case_id)
        if out is None:
            res.mask, res.prob = seg.mask, seg.prob
        else:
            with t("write"):
                _write_outputs(res, seg, disk, out, save_prob, case, series, masks or {})
        with t("measure"):
            from clotseg.measure.clots import measure_case
            from clotseg.measure.patient import summarise_patient

            res.rows = measure_case(case.case_id, seg.mask, vols.cta, seg.ncct, seg.prob)
            res.patient = summarise_patient(case.case_id, seg.mask, vols.cta, seg.ncct,
                                            seg.prob)
        if preview and out is not None:
            with t("preview"):
                from clotseg.report.figures import clot_slices_png

                res.preview_path = out / f"{case.case_id}.png"
                clot_slices_png(vols.cta, seg.ncct, None, seg.mask, res.preview_path)
        res.ok = True
    except ClotsegError as exc:
        res.error, res.file = _reason(exc, case.case_id)
    except OSError as exc:  # disk full, permission denied: this case's outputs are not there
        from clotseg.io.outputs import os_error_message

        res.error = os_error_message(exc)
        res.file = None if exc.filename is None else str(exc.filename)
    except Exception as exc:  # noqa: BLE001 - one case must not stop the others
        res.error = f"{type(exc).__name__}: {exc}"
        res.traceback = tb.format_exc()


def _write_outputs(res: CaseResult, seg: Segmentation, cta: Grid, out: Path,
                   save_prob: bool, case=None, series: dict[str, str] | None = None,
                   masks: dict | None = None) -> None:
    from clotseg.inference.outputs import case_formats, write_masks

    masks = masks or {}
    formats = case_formats(masks.get("formats"), case)
    res.paths = write_masks(seg.mask, cta, out, case, formats, labels=masks.get("labels", False),
                            series=series, auto_dicom_seg=not masks.get("formats"))
    res.mask_path = next(iter(res.paths.values()))
    if save_prob:
        prob = seg.mask.with_array(np.asarray(seg.prob, dtype=np.float32))
        res.prob_path = write_on_grid(prob, out / f"{res.case_id}_prob{MASK_SUFFIX}", cta,
                                      mask=False)


def _reason(exc: ClotsegError, case_id: str) -> tuple[str, str | None]:
    """(reason without a repeated case prefix, offending file if known)."""
    text = str(exc)
    prefix = f"case {case_id}: "
    if text.startswith(prefix):
        text = text[len(prefix):]
    file = str(exc.path) if isinstance(exc, VolumeReadError) else None
    return text, file


class _Timer:
    """Adds the seconds of each named step into a dictionary (and, with ``cpu``, the
    process's CPU seconds into another)."""

    def __init__(self, seconds: dict[str, float], cpu: dict[str, float] | None = None):
        self.seconds, self.cpu = seconds, cpu

    @contextlib.contextmanager
    def __call__(self, step: str):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t0
            if self.cpu is not None:
                self.cpu[step] = self.cpu.get(step, 0.0) + time.process_time() - c0


def predict_cases(predictor: Predictor, cases, out: Path | None, *, save_prob: bool = False,
                  preview: bool = False, series: dict[str, str] | None = None,
                  progress: bool = True, source: str | None = None,
                  formats: list[str] | None = None, labels: bool = False,
                  resume: bool = False, num_parts: int = 1, part_id: int = 0
                  ) -> list[CaseResult]:
    """Segment every case; with ``out``, write masks, ``clots.csv`` and ``predict.json``
    (both rewritten after each case).

    ``resume``: a case whose files are all in ``out`` and whose rows are in a
    ``clots*.csv`` there is not predicted again (its rows are kept). ``num_parts`` /
    ``part_id``: only every ``num_parts``-th case from ``part_id`` on, with the tables
    written as ``clots.part<I>of<K>.csv`` / ``predict.part<I>of<K>.json`` so that parts
    running at once do not overwrite each other's.
    """
    from tqdm import tqdm

    from clotseg.inference.outputs import expected_files, part_of, previous_rows

    cases = part_of(list(cases), num_parts, part_id) if num_parts > 1 else list(cases)
    tag = f".part{part_id}of{num_parts}" if num_parts > 1 else ""
    resuming = resume and out is not None and out.is_dir()
    done = previous_rows(out) if resuming else {}
    done_cases = previous_rows(out, "cases") if resuming else {}
    results: list[CaseResult] = []
    t0 = time.perf_counter()
    earlier: dict[str, EarlierCase] = {}
    if out is not None:
        from clotseg.io.outputs import ensure_out_dir

        ensure_out_dir(out)
        earlier = earlier_outputs(out, {c.case_id for c in cases})
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.case_id)
        if case.case_id in done and all(p.is_file() for p in expected_files(
                out, case, formats, save_prob=save_prob, preview=preview)):
            res = CaseResult(case.case_id, ok=True, rows=done[case.case_id], skipped=True,
                             patient=(done_cases.get(case.case_id) or [None])[0])
        else:
            res = predict_case(predictor, case, out, save_prob=save_prob, preview=preview,
                               series=series, formats=formats, labels=labels)
        results.append(res)
        if not res.ok and progress:
            bar.write(f"FAILED {res.case_id}: {res.error}")
        if out is not None:
            write_summary(out, predictor, results, len(cases), time.perf_counter() - t0, source,
                          earlier, tag=tag)
    if out is not None:
        write_summary(out, predictor, results, len(cases), time.perf_counter() - t0, source,
                      earlier, tag=tag, final=True)
    return results


@dataclass
class EarlierCase:
    """A case an earlier run wrote into OUT: its mask's checksum and its clots.csv lines."""

    sha256: str
    lines: list[list[str]]


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def earlier_outputs(out: Path, redone: set[str]) -> dict[str, EarlierCase]:
    """Cases of earlier runs into ``out`` (not redone now) whose mask is still there,
    unchanged (same checksum as that run's ``predict.json`` recorded): their
    ``clots.csv`` lines are kept, so that ``clots.csv`` always describes exactly the
    masks in the folder. Anything unreadable counts as no earlier record."""
    import csv

    from clotseg.io.tables import csv_cell_text

    try:
        masks = json.loads((out / "predict.json").read_text(encoding="utf-8")).get("masks", {})
        with open(out / "clots.csv", newline="", encoding="utf-8") as fh:
            table = list(csv.reader(fh))
    except (OSError, ValueError, AttributeError, csv.Error):
        return {}
    if not isinstance(masks, dict) or not table or not table[0] or table[0][0] != "case_id":
        return {}
    found: dict[str, EarlierCase] = {}
    for case_id, sha in masks.items():
        path = out / f"{case_id}{MASK_SUFFIX}"
        if case_id in redone or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            if file_sha256(path) == sha:
                found[case_id] = EarlierCase(sha, [])
    for line in table[1:]:
        if line and csv_cell_text(line[0]) in found:
            found[csv_cell_text(line[0])].lines.append(line)
    return found


def _clots_text(results: list[CaseResult], earlier: dict[str, EarlierCase]) -> str:
    """clots.csv: this run's rows, then the kept lines of earlier runs (cells unchanged)."""
    import csv
    import io

    from clotseg.measure.clots import clots_csv_text

    buf = io.StringIO()
    buf.write(clots_csv_text([r for res in results if res.ok for r in res.rows]))
    writer = csv.writer(buf, lineterminator="\n")
    for case in earlier.values():
        writer.writerows(case.lines)
    return buf.getvalue()


def write_summary(out: Path, predictor: Predictor, results: list[CaseResult], n_cases: int,
                  seconds: float, source: str | None = None,
                  earlier: dict[str, EarlierCase] | None = None, *, tag: str = "",
                  final: bool = False) -> None:
    """``clots.csv`` (rows of the cases done so far, plus those of earlier runs whose
    masks are still in ``out``), ``cases.csv`` (one row per patient of this run: the
    primary clot) and ``predict.json``, atomically (``clots<tag>.csv``, ``cases<tag>.csv``,
    ``predict<tag>.json`` for one part of a split cohort). With ``final``, masks in
    ``out`` that neither this run nor a recorded earlier one accounts for are listed (and
    warned about): their clots cannot be in ``clots.csv``."""
    from clotseg import __version__
    from clotseg.measure.clots import clots_csv_text
    from clotseg.measure.patient import PATIENT_CSV_COLUMNS

    earlier = {k: v for k, v in (earlier or {}).items()
               if k not in {r.case_id for r in results if r.ok}}
    write_text(out / f"clots{tag}.csv", _clots_text(results, earlier))
    write_text(out / f"cases{tag}.csv", clots_csv_text(
        [r.patient for r in results if r.ok and r.patient], PATIENT_CSV_COLUMNS))
    masks = {k: v.sha256 for k, v in earlier.items()}
    for r in results:
        path = r.mask_path or (out / f"{r.case_id}{MASK_SUFFIX}" if r.skipped else None)
        if r.ok and path is not None and path.is_file():
            masks[r.case_id] = file_sha256(path)
    failed = [r for r in results if not r.ok]
    summary = {
        "clotseg_version": __version__, "input": source, **predictor.describe(),
        "cases": n_cases, "done": len(results), "complete": len(results) == n_cases,
        "ok": [r.case_id for r in results if r.ok],
        "skipped": [r.case_id for r in results if r.skipped],
        "failed": {r.case_id: r.error for r in failed},
        "failures": [{"case_id": r.case_id, "file": r.file, "reason": r.error,
                      **({"traceback": r.traceback} if r.traceback else {})}
                     for r in failed],
        "warnings": {r.case_id: r.warnings for r in results if r.warnings},
        "seconds": {r.case_id: {k: round(v, 3) for k, v in r.seconds.items()} for r in results},
        "predict_stage_seconds": {r.case_id: {k: round(v, 3) for k, v in r.stages.items()}
                                  for r in results},
        "seconds_total": round(seconds, 3),
        "masks": masks,
        "kept_from_earlier_runs": sorted(earlier),
    }
    if final and not tag:  # parts run side by side: the other parts' masks are not strays
        stray = sorted(strip for p in out.glob(f"*{MASK_SUFFIX}")
                       if not (strip := p.name[: -len(MASK_SUFFIX)]).endswith("_prob")
                       and strip not in masks)
        summary["unaccounted_masks"] = stray
        if stray:
            warnings.warn(f"{out}: mask(s) of {', '.join(stray[:5])}"
                          f"{' ...' if len(stray) > 5 else ''} come from an earlier run that "
                          "recorded no checksum, or were changed since; they are not in "
                          "clots.csv", UserWarning, stacklevel=2)
    write_text(out / f"predict{tag}.json", json.dumps(summary, indent=2, default=str))
