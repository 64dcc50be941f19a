"""Per-case evaluation of predicted clot masks against reference masks, and its summary.

Conventions:

* Both masks of a case must be on the same grid; nothing is resampled silently.
* Empty reference and empty prediction: Dice 1, distances 0. Exactly one empty: Dice 0,
  surface Dice 0, HD95/ASSD NaN with ``distance_undefined`` set. Such cases stay in the
  table; the summary counts the NaNs and gives means over the finite values.
* Volume and length errors are prediction minus reference (an empty mask has volume and
  length 0), so they are defined for every case; ``abs_*`` columns hold their size.
  ``volume_error_pct`` (relative to the reference volume) is NaN on clot-free cases.
* Detection: ``TP`` when prediction and reference overlap, ``FN`` when a reference clot
  is not touched, ``FP`` when a clot-free case gets a prediction, ``TN`` when both are
  empty. Sensitivity = TP / (TP + FN); specificity = TN / (TN + FP) on clot-free cases.
* A case whose prediction file is missing is evaluated as an empty prediction, marked
  ``status = "missing prediction"`` (a missed clot where the reference has one) and
  listed in the summary; it is never dropped.
* A case whose reference or prediction cannot be used (unreadable, not a 0/1 mask, on
  another grid) is not scored: it is listed with the reason under ``failed`` in the
  summary, the other cases are evaluated, and ``clotseg evaluate`` exits 1.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import write_text
from clotseg.io.layouts import CaseRef, DatasetIndex, discover
from clotseg.io.readers import VOLUME_SUFFIXES, read_volume, strip_suffix, volume_suffix
from clotseg.io.tables import write_csv
from clotseg.io.volume import Volume
from clotseg.measure.centreline import centreline_length_mm
from clotseg.metrics.detection import (
    OUTCOMES,
    count_components,
    detection,
    false_positive_components,
)
from clotseg.metrics.overlap import dice, volume_mm3
from clotseg.metrics.surface import surface_metrics

#: Surface-Dice tolerance (mm).
SURFACE_TOLERANCE_MM = 1.0

COLUMNS = ["case_id", "status", "dice", "hd95_mm", "assd_mm", "surface_dice_1mm",
           "ref_volume_mm3", "pred_volume_mm3", "volume_error_mm3", "abs_volume_error_mm3",
           "volume_error_pct", "ref_length_mm", "pred_length_mm", "length_error_mm", "abs_length_error_mm",
           "detection", "ref_components", "pred_components", "fp_components",
           "distance_undefined", "pred_file", "ref_file"]

#: Per-case numbers summarised with median, IQR and mean.
METRICS = ["dice", "hd95_mm", "assd_mm", "surface_dice_1mm", "volume_error_mm3",
           "abs_volume_error_mm3", "volume_error_pct", "length_error_mm", "abs_length_error_mm", "fp_components"]

MISSING = "missing prediction"
NAN = float("nan")


def evaluate_case(pred: Volume, ref: Volume, case_id: str, *, pred_file: str | Path = "",
                  ref_file: str | Path = "") -> dict:
    """All metrics of one case (a row of the per-case CSV).

    The prediction must be on the reference grid: otherwise a :class:`ClotsegError`
    names both files (or the case) and what differs."""
    if not pred.grid.same_as(ref.grid):
        names = f"{pred_file} vs {ref_file}" if pred_file else f"case {case_id}"
        raise ClotsegError(f"{names}: prediction and reference are on different grids "
                           f"({'; '.join(pred.grid.differences(ref.grid))}); resample the "
                           "prediction onto the reference (CTA) grid first")
    p = _binary(pred.array, pred_file or f"prediction of {case_id}")
    r = _binary(ref.array, ref_file or f"reference of {case_id}")
    spacing = ref.spacing
    surface = surface_metrics(p, r, spacing, SURFACE_TOLERANCE_MM)
    ref_vol, pred_vol = volume_mm3(r, spacing), volume_mm3(p, spacing)
    ref_len, pred_len = centreline_length_mm(r, spacing), centreline_length_mm(p, spacing)
    return {
        "case_id": case_id, "status": "ok", "dice": dice(p, r),
        "hd95_mm": surface["hd95_mm"], "assd_mm": surface["assd_mm"],
        "surface_dice_1mm": surface["surface_dice"],
        "ref_volume_mm3": ref_vol, "pred_volume_mm3": pred_vol,
        "volume_error_mm3": pred_vol - ref_vol, "abs_volume_error_mm3": abs(pred_vol - ref_vol),
        "volume_error_pct": 100.0 * (pred_vol - ref_vol) / ref_vol if ref_vol else NAN,
        "ref_length_mm": ref_len, "pred_length_mm": pred_len,
        "length_error_mm": pred_len - ref_len, "abs_length_error_mm": abs(pred_len - ref_len),
        "detection": detection(p, r), "ref_components": count_components(r),
        "pred_components": count_components(p), "fp_components": false_positive_components(p, r),
        "distance_undefined": bool(p.any() != r.any()),
        "pred_file": str(pred_file), "ref_file": str(ref_file),
    }


def evaluate_missing(ref: Volume, case_id: str, *, ref_file: str | Path = "") -> dict:
    """Row of a case without a prediction file: scored as an empty prediction."""
    empty = ref.with_array(np.zeros(ref.shape, dtype=np.uint8))
    row = evaluate_case(empty, ref, case_id, ref_file=ref_file)
    row["status"] = MISSING
    return row


def _binary(array: np.ndarray, name: str) -> np.ndarray:
    """Non-zero voxels; a float array with fractional values is refused (a probability
    map given instead of a mask would otherwise count as all foreground)."""
    a = np.asarray(array)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ClotsegError(f"{name}: mask contains NaN or infinite values")
        if np.any(a != np.round(a)):
            raise ClotsegError(f"{name}: not a binary mask (fractional values; a "
                               "probability map?)")
    return a > 0


class Evaluator:
    """Accumulates per-case rows (MONAI-style "metric with a buffer")."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, pred: Volume | None, ref: Volume, case_id: str, *,
            pred_file: str | Path = "", ref_file: str | Path = "") -> dict:
        """Evaluate one case (``pred=None``: the prediction is missing)."""
        if pred is None:
            row = evaluate_missing(ref, case_id, ref_file=ref_file)
        else:
            row = evaluate_case(pred, ref, case_id, pred_file=pred_file, ref_file=ref_file)
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        return summarize(self.rows)


def stats(values: Iterable) -> dict:
    """``n`` finite values, ``n_nan`` others; mean, median and quartiles of the finite."""
    values = list(values)
    finite = np.array([float(v) for v in values if _is_number(v) and math.isfinite(v)])
    out: dict = {"n": int(finite.size), "n_nan": len(values) - int(finite.size)}
    if finite.size:
        q1, med, q3 = np.percentile(finite, [25, 50, 75])
        out.update(mean=float(finite.mean()), median=float(med), q1=float(q1), q3=float(q3),
                   iqr=float(q3 - q1))
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def summarize(rows: list[dict]) -> dict:
    """Summary of per-case rows: metric statistics over all cases and over detected
    clots, detection counts, sensitivity, specificity, missed clots, false-positive
    components per case, undefined-distance and missing-prediction counts."""
    counts = {k: sum(r["detection"] == k for r in rows) for k in OUTCOMES}
    tp, fn, fp, tn = (counts[k] for k in OUTCOMES)
    detected = [r for r in rows if r["detection"] == "TP"]
    fp_comp = [r["fp_components"] for r in rows]
    return {
        "n_cases": len(rows),
        "n_clot_cases": tp + fn, "n_clot_free_cases": fp + tn,
        **counts,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "missed": [r["case_id"] for r in rows if r["detection"] == "FN"],
        "false_positive_cases": [r["case_id"] for r in rows if r["detection"] == "FP"],
        "missing_predictions": [r["case_id"] for r in rows if r["status"] == MISSING],
        "distance_undefined": sum(bool(r["distance_undefined"]) for r in rows),
        "distance_undefined_cases": [r["case_id"] for r in rows if r["distance_undefined"]],
        "fp_components_per_case": float(np.mean(fp_comp)) if fp_comp else None,
        "fp_components_total": int(sum(fp_comp)),
        "metrics": {m: stats(r[m] for r in rows) for m in METRICS},
        "metrics_detected": {m: stats(r[m] for r in detected) for m in METRICS},
    }


def find_predictions(pred_dir: Path) -> dict[str, Path]:
    """``case id -> file`` for the volume files in ``pred_dir`` (``<case>.nii.gz`` or any
    other volume suffix). With two files for one case the first suffix of
    ``VOLUME_SUFFIXES`` wins, with a warning."""
    found: dict[str, list[Path]] = {}
    for p in sorted(pred_dir.iterdir()):
        if p.is_file() and not p.name.startswith(".") and volume_suffix(p):
            found.setdefault(strip_suffix(p), []).append(p)
    out = {}
    for case_id, paths in found.items():
        paths.sort(key=lambda q: VOLUME_SUFFIXES.index(volume_suffix(q)))
        if len(paths) > 1:
            warnings.warn(f"{pred_dir}: several predictions for case {case_id} "
                          f"({', '.join(q.name for q in paths)}); using {paths[0].name}",
                          UserWarning, stacklevel=3)
        out[case_id] = paths[0]
    return out


def find_prediction(pred_dir: str | Path, case_id: str) -> Path | None:
    """The prediction file of one case in ``pred_dir`` (``<case>.nii.gz`` or another
    volume suffix), or None."""
    for suffix in VOLUME_SUFFIXES:
        path = Path(pred_dir) / f"{case_id}{suffix}"
        if path.is_file():
            return path
    return None


def reference_cases(index: DatasetIndex, cases: list[str] | None) -> list[CaseRef]:
    """The cases to evaluate: all with a reference mask, or exactly ``cases``."""
    with_mask = [c for c in index.cases if c.mask is not None]
    if cases is None:
        skipped = [c.case_id for c in index.cases if c.mask is None]
        if skipped:
            warnings.warn(f"{index.root}: {len(skipped)} case(s) without a reference mask "
                          f"not evaluated: {', '.join(skipped[:5])}"
                          f"{' ...' if len(skipped) > 5 else ''}", UserWarning, stacklevel=3)
        chosen = with_mask
    else:
        known = {c.case_id: c for c in index.cases}
        unknown = [c for c in cases if c not in known]
        if unknown:
            raise ClotsegError(f"{index.root}: case(s) not in the dataset: "
                               f"{', '.join(sorted(unknown)[:5])}")
        no_mask = [c for c in cases if known[c].mask is None]
        if no_mask:
            raise ClotsegError(f"{index.root}: case(s) without a reference mask: "
                               f"{', '.join(sorted(no_mask)[:5])}")
        chosen = [known[c] for c in dict.fromkeys(cases)]
    if not chosen:
        raise ClotsegError(f"{index.root}: no cases with reference masks to evaluate")
    return chosen


def evaluate_dirs(pred_dir: str | Path, data: str | Path | DatasetIndex, out_csv: str | Path,
                  cases: list[str] | None = None, *,
                  spacing: tuple[float, float, float] | None = None,
                  progress: bool = False) -> tuple[list[dict], dict]:
    """Evaluate ``PRED/<case>.nii.gz`` against the reference masks of ``data``.

    Writes the per-case CSV ``out_csv`` and the summary ``<out_csv stem>.json`` (both
    atomically) and returns ``(rows, summary)``. ``cases`` restricts the evaluation
    (e.g. to a split); ``spacing`` is for the original ``.npy`` layout only.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise ClotsegError(f"{pred_dir}: prediction folder does not exist")
    index = data if isinstance(data, DatasetIndex) else discover(data, spacing=spacing)
    refs = reference_cases(index, cases)
    predictions = find_predictions(pred_dir)
    known = {c.case_id for c in index.cases}
    extra = sorted(k for k in set(predictions) - known
                   if not (k.endswith("_prob") and k[:-5] in known)  # probability maps
                   and not (k.endswith(".seg") and k[:-4] in known))  # predict --format seg.nrrd
    if extra:
        warnings.warn(f"{pred_dir}: {len(extra)} prediction(s) without a case in "
                      f"{index.root}: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}",
                      UserWarning, stacklevel=2)
    evaluator = Evaluator()
    it = refs
    if progress:
        from tqdm import tqdm

        it = tqdm(refs, desc="evaluating", unit="case", leave=False)
    failed: dict[str, str] = {}
    for case in it:
        try:
            _evaluate_one(evaluator, case, predictions.get(case.case_id), pred_dir)
        except ClotsegError as exc:  # this case cannot be scored; the others can
            failed[case.case_id] = str(exc)
            warnings.warn(f"case {case.case_id} not scored: {exc}", UserWarning, stacklevel=2)
    if not evaluator.rows and failed:
        raise ClotsegError(f"no case could be scored; the first: {next(iter(failed.values()))}")
    rows, summary = evaluator.rows, evaluator.summary()
    summary["failed"] = failed
    write_results(out_csv, rows, summary)
    return rows, summary


def _evaluate_one(evaluator: Evaluator, case: CaseRef, path: Path | None,
                  pred_dir: Path) -> None:
    """Read one case's reference and prediction (0/1 masks) and add its row."""
    from clotseg.io.values import binary_mask

    ref = binary_mask(case.read("mask"), case.mask)
    if path is None:
        warnings.warn(f"{pred_dir}: no prediction for case {case.case_id} "
                      f"(expected {case.case_id}.nii.gz); scored as an empty prediction",
                      UserWarning, stacklevel=3)
        evaluator.add(None, ref, case.case_id, ref_file=case.mask)
    else:
        evaluator.add(binary_mask(read_volume(path), path), ref, case.case_id,
                      pred_file=path, ref_file=case.mask)


def summary_path(out_csv: str | Path) -> Path:
    """Where the summary of ``out_csv`` goes: same folder and stem, ``.json``."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + ".json")


def write_results(out_csv: str | Path, rows: list[dict], summary: dict) -> tuple[Path, Path]:
    """Write the per-case CSV and the summary JSON atomically."""
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise ClotsegError(f"{out_csv}: is a folder; give a file name for the CSV")
    write_csv(out_csv, rows, COLUMNS)
    json_path = summary_path(out_csv)
    write_text(json_path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return out_csv, json_path


def format_table(rows: list[dict], summary: dict) -> str:
    """Plain-text table: one line per case, then the summary."""
    head = (f"{'case':<20} {'Dice':>6} {'HD95':>7} {'ASSD':>6} {'SDice':>6} "
            f"{'vol err':>9} {'len err':>8} {'FP':>3}  det")
    lines = [head, "-" * len(head)]
    for r in rows:
        note = "  (missing prediction)" if r["status"] == MISSING else ""
        lines.append(f"{r['case_id'][:20]:<20} {_num(r['dice'], 6, 3)} {_num(r['hd95_mm'], 7, 2)}"
                     f" {_num(r['assd_mm'], 6, 2)} {_num(r['surface_dice_1mm'], 6, 3)}"
                     f" {_num(r['volume_error_mm3'], 9, 1)} {_num(r['length_error_mm'], 8, 1)}"
                     f" {r['fp_components']:>3}  {r['detection']}{note}")
    m = summary["metrics"]
    lines += ["-" * len(head), f"{summary['n_cases']} cases: {summary['n_clot_cases']} with "
              f"clot, {summary['n_clot_free_cases']} clot-free"]
    for key, label, dec in (("dice", "Dice", 3), ("hd95_mm", "HD95 mm", 2),
                            ("assd_mm", "ASSD mm", 2), ("surface_dice_1mm", "surface Dice", 3),
                            ("abs_volume_error_mm3", "|vol err| mm3", 1),
                            ("abs_length_error_mm", "|len err| mm", 1)):
        s = m[key]
        if s["n"]:
            text = (f"median {s['median']:.{dec}f} (IQR {s['q1']:.{dec}f}-{s['q3']:.{dec}f}), "
                    f"mean {s['mean']:.{dec}f}")
        else:
            text = "-"
        nan = f"; {s['n_nan']} undefined" if s["n_nan"] else ""
        lines.append(f"  {label:<14} {text}{nan}")
    lines += [f"  sensitivity {_rate(summary['sensitivity'])}  specificity "
              f"{_rate(summary['specificity'])}  FP components/case "
              f"{summary['fp_components_per_case']:.2f}",
              f"  missed: {', '.join(summary['missed']) or 'none'}"]
    if summary["missing_predictions"]:
        lines.append(f"  missing predictions: {', '.join(summary['missing_predictions'])}")
    if summary.get("failed"):
        lines.append(f"  not scored: {', '.join(summary['failed'])}")
    return "\n".join(lines)


def _num(v, width: int, dec: int) -> str:
    if _is_number(v) and math.isfinite(v):
        return f"{v:>{width}.{dec}f}"
    return f"{'-':>{width}}"


def _rate(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"
