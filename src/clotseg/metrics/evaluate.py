"""Per-case evaluation of predicted masks against reference masks, and its summary.

Cases where exactly one of prediction and reference is empty get Dice 0 and NaN
distances with ``distance_undefined`` set; they stay in the table and are counted in the
summary (never silently dropped). A missing prediction file is a row with status
``missing prediction``, counted as a missed clot.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import write_text
from clotseg.io.layouts import DatasetIndex, discover
from clotseg.io.readers import VOLUME_SUFFIXES, read_volume
from clotseg.io.volume import Volume
from clotseg.measure.centreline import centreline_length_mm
from clotseg.metrics.detection import detection, false_positive_components
from clotseg.metrics.overlap import dice, volume_error_mm3
from clotseg.metrics.surface import assd, hd95, surface_dice

COLUMNS = ["case_id", "status", "dice", "hd95_mm", "assd_mm", "surface_dice_1mm",
           "ref_volume_mm3", "pred_volume_mm3", "volume_error_mm3", "volume_error_pct",
           "ref_length_mm", "pred_length_mm", "length_error_mm", "detection",
           "fp_components", "distance_undefined"]
METRICS = ["dice", "hd95_mm", "assd_mm", "surface_dice_1mm", "volume_error_mm3",
           "volume_error_pct", "length_error_mm", "fp_components"]


def evaluate_case(pred: Volume, ref: Volume, case_id: str) -> dict:
    """All metrics of one case; the prediction must be on the reference grid."""
    if not pred.grid.same_as(ref.grid):
        raise ClotsegError(f"case {case_id}: prediction grid differs from the reference grid "
                           f"({'; '.join(pred.grid.differences(ref.grid))})")
    p, r, sp = np.asarray(pred.array) > 0, np.asarray(ref.array) > 0, ref.spacing
    ref_vol, pred_vol = r.sum() * ref.voxel_volume, p.sum() * ref.voxel_volume
    ref_len = centreline_length_mm(r, sp) if r.any() else 0.0
    pred_len = centreline_length_mm(p, sp) if p.any() else 0.0
    return {
        "case_id": case_id, "status": "ok", "dice": dice(p, r), "hd95_mm": hd95(p, r, sp),
        "assd_mm": assd(p, r, sp), "surface_dice_1mm": surface_dice(p, r, sp, 1.0),
        "ref_volume_mm3": float(ref_vol), "pred_volume_mm3": float(pred_vol),
        "volume_error_mm3": volume_error_mm3(p, r, sp),
        "volume_error_pct": 100.0 * (pred_vol - ref_vol) / ref_vol if ref_vol else float("nan"),
        "ref_length_mm": ref_len, "pred_length_mm": pred_len,
        "length_error_mm": pred_len - ref_len if (r.any() and p.any()) else float("nan"),
        "detection": detection(p, r), "fp_components": false_positive_components(p, r),
        "distance_undefined": bool(p.any() != r.any()),
    }


def _stats(values: list[float]) -> dict:
    v = np.array([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)], float)
    n_nan = len(values) - len(v)
    if not len(v):
        return {"n": 0, "n_nan": n_nan}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(len(v)), "n_nan": n_nan, "mean": float(v.mean()), "median": float(med),
            "q1": float(q1), "q3": float(q3)}


def summarize(rows: list[dict]) -> dict:
    """Median/IQR/mean per metric, detection rates and the list of missed clots."""
    det = [r["detection"] for r in rows]
    tp, fn, fp, tn = (det.count(k) for k in ("TP", "FN", "FP", "TN"))
    out = {"n_cases": len(rows), "TP": tp, "FN": fn, "FP": fp, "TN": tn,
           "sensitivity": tp / (tp + fn) if tp + fn else None,
           "specificity": tn / (tn + fp) if tn + fp else None,
           "missed": [r["case_id"] for r in rows if r["detection"] == "FN"],
           "false_positive_cases": [r["case_id"] for r in rows if r["detection"] == "FP"],
           "missing_predictions": [r["case_id"] for r in rows if r["status"] != "ok"],
           "distance_undefined": sum(bool(r.get("distance_undefined")) for r in rows)}
    clot_rows = [r for r in rows if r["detection"] in ("TP", "FN")]
    out["metrics"] = {m: _stats([r[m] for r in rows]) for m in METRICS}
    out["metrics_clot_cases"] = {m: _stats([r[m] for r in clot_rows]) for m in METRICS}
    return out


def find_prediction(pred_dir: Path, case_id: str) -> Path | None:
    for suf in VOLUME_SUFFIXES:
        p = pred_dir / f"{case_id}{suf}"
        if p.is_file():
            return p
    return None


def evaluate_dirs(pred_dir: str | Path, data: str | Path | DatasetIndex, out_csv: str | Path,
                  cases: list[str] | None = None, spacing=None,
                  progress: bool = False) -> tuple[list[dict], dict]:
    """Evaluate ``PRED/<case>.nii.gz`` against the masks of ``data``; write CSV + JSON."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise ClotsegError(f"{pred_dir}: prediction folder does not exist")
    index = data if isinstance(data, DatasetIndex) else discover(data, spacing=spacing)
    refs = [c for c in index.cases if c.mask is not None]
    if cases is not None:
        unknown = set(cases) - {c.case_id for c in refs}
        if unknown:
            raise ClotsegError(f"case(s) without a reference mask in {index.root}: "
                               f"{sorted(unknown)[:5]}")
        refs = [c for c in refs if c.case_id in set(cases)]
    if not refs:
        raise ClotsegError(f"{index.root}: no cases with reference masks to evaluate")
    rows = []
    it = refs
    if progress:
        from tqdm import tqdm

        it = tqdm(refs, desc="evaluating", unit="case", leave=False)
    for case in it:
        path = find_prediction(pred_dir, case.case_id)
        if path is None:
            warnings.warn(f"{pred_dir}: no prediction for case {case.case_id}; counted as "
                          "missed", UserWarning, stacklevel=2)
            ref = case.read("mask")
            has = bool(np.any(ref.array))
            rows.append({**dict.fromkeys(COLUMNS, float("nan")), "case_id": case.case_id,
                         "status": "missing prediction", "dice": 0.0 if has else 1.0,
                         "detection": "FN" if has else "TN", "fp_components": 0,
                         "distance_undefined": has})
            continue
        rows.append(evaluate_case(read_volume(path), case.read("mask"), case.case_id))
    summary = summarize(rows)
    out_csv = Path(out_csv)
    write_rows(out_csv, rows)
    write_text(out_csv.with_suffix(".json"), json.dumps(summary, indent=2))
    return rows, summary


def write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def format_table(rows: list[dict], summary: dict) -> str:
    """A plain-text table of the cases and the summary."""
    lines = [f"{'case':<24}{'Dice':>7}{'HD95':>8}{'ASSD':>7}{'SDice':>7}{'vol err':>9}  det"]
    for r in rows:
        lines.append(f"{r['case_id'][:23]:<24}{_f(r['dice'])}{_f(r['hd95_mm'], 8)}"
                     f"{_f(r['assd_mm'])}{_f(r['surface_dice_1mm'])}{_f(r['volume_error_mm3'], 9, 1)}"
                     f"  {r['detection']}")
    d = summary["metrics"]["dice"]
    h = summary["metrics"]["hd95_mm"]
    sens, spec = summary["sensitivity"], summary["specificity"]
    lines += ["", f"Dice median {_g(d, 'median')} (IQR {_g(d, 'q1')}–{_g(d, 'q3')}), "
                  f"mean {_g(d, 'mean')};  HD95 median {_g(h, 'median')} mm "
                  f"({h['n_nan']} undefined)",
              f"sensitivity {_p(sens)}  specificity {_p(spec)}  "
              f"missed: {', '.join(summary['missed']) or 'none'}"]
    return "\n".join(lines)


def _f(v, width=7, dec=3):
    return f"{v:>{width}.{dec}f}" if isinstance(v, float) and math.isfinite(v) else f"{'-':>{width}}"


def _g(stats, key):
    return f"{stats[key]:.3f}" if key in stats else "-"


def _p(v):
    return "n/a" if v is None else f"{v:.2f}"
