"""The user-facing Python API; ``clotseg predict`` is a thin layer over :func:`segment`.

>>> import clotseg
>>> results = clotseg.segment("runs/fold0", "new_patients/", "predictions/")  # doctest: +SKIP
>>> [(r.case_id, r.ok, r.mask_path) for r in results]                         # doctest: +SKIP

Masks are always on exactly the CTA's grid (size, spacing, origin, direction); for a case
with only an NCCT, on exactly the NCCT's grid. A case with one scan is predicted with a
warning, and ``predict.json`` (``inputs``), ``clots.csv`` and ``cases.csv`` (the
``inputs`` column) say which scans each case used.

Per case, :func:`predict_case` runs inference's steps (read, segment, write the masks:
:mod:`clotseg.inference`) and then this layer's (measure the clots, draw the preview);
:func:`predict_cases` loops over a dataset and rewrites ``clots.csv``, ``cases.csv`` and
``predict.json`` after every case, so inference never imports measurement or report code.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clotseg.errors import DatasetError
from clotseg.inference.cases import CaseResult
from clotseg.inference.outputs import MASK_SUFFIX
from clotseg.inference.predictor import Predictor, Segmentation
from clotseg.io.atomic import write_text
from clotseg.io.volume import Volume
from clotseg.timing import collect

__all__ = ["CaseResult", "Predictor", "find_cases", "predict_case", "predict_cases",
           "segment", "segment_volumes", "write_summary"]


def segment(run: str | Path | Sequence[str | Path], inputs: str | Path,
            out: str | Path | None = None, *, device: str = "auto", tta: bool = False,
            precision: str = "auto", save_prob: bool = False, preview: bool = False,
            threshold: float | None = None, min_component_mm3: float | None = None,
            keep_largest: bool = False, batch_size: int = 16,
            spacing: tuple[float, float, float] | None = None,
            cta_series: str | None = None, ncct_series: str | None = None,
            num_threads: int | None = None, progress: bool = True,
            fp_filter: bool = True, primary_only: bool = True, scan_support: bool = False,
            formats: Sequence[str] | None = None, labels: bool = False, resume: bool = False,
            num_parts: int = 1, part_id: int = 0, engine: str = "torch",
            confirm: Sequence[str | Path] = (), confirm_threshold: float | None = None
            ) -> list[CaseResult]:
    """Segment the clots of every case under ``inputs``; a case that fails is returned
    with ``ok=False`` and the reason, and the others are still done.

    Args:
        run: a trained run folder, several (a fold ensemble: probabilities averaged), or a
            model exported with ``clotseg export`` (``model.zip``; ``model.onnx`` implies
            ``engine="onnx"``).
        inputs: one case folder (``cta.*`` + ``ncct.*`` files or ``cta/`` + ``ncct/``
            DICOM folders), a dataset in any supported layout (nnU-Net: ``imagesTs`` when
            present), or one DICOM folder holding both series.
        out: where ``<case>.nii.gz`` masks, ``clots.csv``, ``cases.csv`` and
            ``predict.json`` go; None keeps masks and probabilities in memory
            (``CaseResult.mask`` / ``.prob``).
        device, tta, precision, batch_size, num_threads, engine: how the network runs.
        save_prob, preview: also write ``<case>_prob.nii.gz`` / ``<case>.png``.
        threshold, min_component_mm3: override the run's own post-processing values.
        keep_largest: keep only the largest component.
        fp_filter: apply the run's learned false-positive filter, if it has one.
        primary_only: keep the primary clot and its fragments (default); False keeps
            every component. What is dropped is listed in ``predict.json``.
        scan_support: also ask the network about what it found with each scan alone (two
            more passes over those slices) for the review score's ``unsupported`` signal
            (:mod:`clotseg.inference.support`; off by default).
        confirm: other run(s) whose averaged probability must reach
            ``confirm_threshold`` (default: the first one's own threshold) somewhere in a
            component for it to be kept (:func:`clotseg.masks.keep_confirmed`).
        spacing: voxel size for the original ``.npy`` layout, which stores none.
        cta_series, ncct_series: DICOM SeriesInstanceUIDs when one folder holds both.
        formats, labels, resume, num_parts, part_id: see :func:`predict_cases` and
            :mod:`clotseg.inference.outputs`.
        progress: show a progress bar.

    Returns:
        One :class:`~clotseg.inference.cases.CaseResult` per case.

    Examples:
        >>> results = segment("runs/fold0", "new_patients/", "predictions/")  # doctest: +SKIP
        >>> [(r.case_id, r.ok, len(r.rows)) for r in results]  # doctest: +SKIP
        [('patient7', True, 1)]
    """
    from clotseg.io.outputs import OutLock, check_out_apart

    series = {k: v for k, v in (("cta", cta_series), ("ncct", ncct_series)) if v}
    cases = find_cases(inputs, spacing=spacing)
    if out is not None:
        check_out_apart(out, inputs, [f for c in cases for f in c.files.values()])
    # One writer per OUT (so its masks and clots.csv agree), taken before any work.
    with contextlib.nullcontext() if out is None else OutLock(out, "predict"):
        predictor = Predictor.from_runs(run, device=device, precision=precision, tta=tta,
                                        batch_size=batch_size, threshold=threshold,
                                        min_component_mm3=min_component_mm3,
                                        keep_largest=keep_largest, num_threads=num_threads,
                                        use_filter=fp_filter, primary_only=primary_only,
                                        scan_support=scan_support, engine=engine,
                                        confirm=confirm, confirm_threshold=confirm_threshold)
        return predict_cases(predictor, cases, None if out is None else Path(out),
                             save_prob=save_prob, preview=preview, series=series,
                             progress=progress, source=str(inputs),
                             formats=list(formats) if formats else None, labels=labels,
                             resume=resume, num_parts=num_parts, part_id=part_id)


def segment_volumes(run: str | Path | Sequence[str | Path] | Predictor, cta: Volume | None,
                    ncct: Volume | None, *, case_id: str = "case", device: str = "auto",
                    tta: bool = False, **settings) -> tuple[Volume, np.ndarray, list[dict]]:
    """Segment in-memory volumes.

    Args:
        run: run folder(s) or exported model, or a ready :class:`Predictor` (load once,
            segment many).
        cta, ncct: the scans, each on its own grid (the NCCT is brought onto the CTA's);
            either (not both) may be None: the mask is then on the other's grid.
        case_id: the name used in messages and in the rows.
        device, tta: how the network runs; ``settings``: as for :func:`segment`
            (``threshold``, ``min_component_mm3``, ``keep_largest``, ``primary_only``, ...).

    Returns:
        ``(mask, prob, rows)``: the uint8 mask on the CTA grid, the float32 probability on
        the CTA grid (both on the NCCT's grid without a CTA), and the ``clots.csv`` rows.

    Examples:
        >>> from clotseg.io.readers import read_volume
        >>> mask, prob, rows = segment_volumes(  # doctest: +SKIP
        ...     "runs/fold0", read_volume("cta.nii.gz"), read_volume("ncct.nii.gz"))
    """
    from clotseg.measure.clots import measure_case

    predictor = run if isinstance(run, Predictor) else Predictor.from_runs(
        run, device=device, tta=tta, **settings)
    seg = predictor.segment(cta, ncct, case_id)
    res = CaseResult(case_id, ok=True)
    res.rows = measure_case(case_id, seg.mask, cta, seg.ncct, seg.prob)
    res.patient = {}
    _add_qc(res, seg)
    return seg.mask, seg.prob, res.rows


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
    """read → predict → write (inference), then measure → preview (here); any failure
    makes the case a failed result with the reason (and the file, when known)."""
    import traceback as tb

    from clotseg.errors import ClotsegError
    from clotseg.inference.cases import Timer, read_case, reason, write_case
    from clotseg.measure.clots import unname_sides

    t = Timer(res.seconds, res.stages_cpu)
    try:
        with t("read"):
            vols, disk = read_case(case, series)
        with t("predict"):
            seg = predictor.segment(vols.cta, vols.ncct, case.case_id)
        res.inputs = list(seg.inputs)
        if out is None:
            res.mask, res.prob = seg.mask, seg.prob
        else:
            with t("write"):
                write_case(res, seg.mask, seg.prob, disk, out, save_prob, case, series,
                           masks or {})
        with t("measure"):
            _measure(res, case.case_id, seg, vols.cta)
            if not case.orientation_known:  # the read warned; a side would be a guess
                unname_sides([*res.rows, res.patient])
        if preview and out is not None:
            with t("preview"):
                from clotseg.report.figures import clot_slices_png

                res.preview_path = out / f"{case.case_id}.png"
                clot_slices_png(vols.cta, seg.ncct, None, seg.mask, res.preview_path)
        res.ok = True
    except ClotsegError as exc:
        res.error, res.file = reason(exc, case.case_id)
    except OSError as exc:  # disk full, permission denied: this case's outputs are not there
        from clotseg.io.outputs import os_error_message

        res.error = os_error_message(exc)
        res.file = None if exc.filename is None else str(exc.filename)
    except Exception as exc:  # noqa: BLE001 - one case must not stop the others
        res.error = f"{type(exc).__name__}: {exc}"
        res.traceback = tb.format_exc()


def _measure(res: CaseResult, case_id: str, seg: Segmentation, cta: Volume) -> None:
    """The case's clots.csv rows and its cases.csv row (the primary clot)."""
    from clotseg.measure.clots import measure_case
    from clotseg.measure.patient import summarise_patient

    res.rows = measure_case(case_id, seg.mask, cta, seg.ncct, seg.prob)
    res.patient = summarise_patient(case_id, seg.mask, cta, seg.ncct, seg.prob)
    res.dropped = seg.dropped
    if seg.dropped:  # what the primary-clot rule removed still counts as lying elsewhere
        res.patient["other_components"] += len(seg.dropped)
        res.patient["other_volume_mm3"] += sum(d["volume_mm3"] for d in seg.dropped)
    _add_qc(res, seg)


def _add_qc(res: CaseResult, seg: Segmentation) -> None:
    """The QC score (computed by inference) into the rows: per component in clots.csv
    (both number components largest first), per case in cases.csv and predict.json."""
    for row in res.rows:
        k = int(row["component"])
        row["qc_score"] = (seg.component_qc[k - 1] if 0 < k <= len(seg.component_qc)
                           else seg.qc_score)  # component 0: the case without a clot
    res.patient.update(qc_score=seg.qc_score, review=seg.review)
    res.qc = {"qc_score": seg.qc_score, "review_recommended": seg.review,
              "signals": seg.qc_signals}


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
            res.qc = _qc_from_row(res.patient)
            res.inputs = _inputs_from_row(res.patient)
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


def _qc_from_row(patient: dict | None) -> dict:
    """QC of a case kept from an earlier run, as its cases.csv row (text) says."""
    if not patient or patient.get("qc_score") in (None, ""):
        return {}
    try:
        score = float(patient["qc_score"])
    except ValueError:
        return {}
    return {"qc_score": score, "review_recommended": patient.get("review") == "True"}


def _inputs_from_row(patient: dict | None) -> list[str]:
    """The scans a case kept from an earlier run used, as its cases.csv ``inputs`` cell
    says ([] when that run wrote no such column)."""
    text = str((patient or {}).get("inputs") or "")
    return [m for m in text.split("+") if m in ("cta", "ncct")]


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
        "dropped_components": {r.case_id: r.dropped for r in results if r.dropped},
        "qc": {r.case_id: r.qc for r in results if r.ok and r.qc},
        "inputs": {r.case_id: r.inputs for r in results if r.ok and r.inputs},
        "review_recommended": [r.case_id for r in results
                               if r.ok and r.qc.get("review_recommended")],
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


def find_cases(inputs: str | Path, *, spacing: tuple[float, float, float] | None = None
               ) -> list:
    """The cases (:class:`~clotseg.io.layouts.CaseRef`) to predict under ``inputs``."""
    from clotseg.io.layouts import CaseRef, discover

    root = Path(inputs)
    if not root.exists():
        raise DatasetError(f"{root}: input does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (give a case folder, a dataset folder or "
                           "a DICOM folder)")
    if root.name in ("imagesTs", "imagesTr") and (root.parent / "dataset.json").is_file():
        index = discover(root.parent, layout="nnunet")
        cases = [c for c in index.cases  # an NCCT-only case is named by its NCCT
                 if c.reference_path is not None and c.reference_path.parent == root]
    else:
        try:
            index = discover(root, spacing=spacing)
        except DatasetError:
            if _holds_dicom(root):  # one folder with both series (told apart by UID/kind)
                return [CaseRef(root.name, root, root)]
            raise
        cases = index.cases
        if index.layout == "nnunet":
            test = [c for c in cases if any(p.parent.name == "imagesTs" for p in
                                            c.files.values())]
            cases = test or cases
    for problem in index.problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    if not cases:
        raise DatasetError(f"{root}: no cases to predict found")
    return cases


def _holds_dicom(folder: Path) -> bool:
    from clotseg.io.dicom import list_series

    return bool(list_series(folder))
