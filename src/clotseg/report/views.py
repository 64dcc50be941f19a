"""What the report page shows besides the run facts: the evaluation summary tables and
one card per case (metrics, measured clots, axial slices and MIP), worst case first."""

from __future__ import annotations

import tempfile
from pathlib import Path

from clotseg.errors import ClotsegError
from clotseg.report.formatting import DASH, as_float, data_uri, fmt, fmt_pct, read_csv, read_json

#: Summary metrics shown in the evaluation table, in this order, with their labels; any
#: other metric found in the summary JSON is shown after them under its own name.
METRIC_LABELS = {
    "dice": "Dice",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "ASSD (mm)",
    "surface_dice_1mm": "Surface Dice at 1 mm",
    "volume_error_mm3": "Volume error (mm³)",
    "volume_error_pct": "Volume error (%)",
    "length_error_mm": "Length error (mm)",
    "fp_components": "False-positive components",
    "abs_volume_error_mm3": "Absolute volume error (mm³)",
    "abs_length_error_mm": "Absolute length error (mm)",
}

#: Labels of known scalar entries of the evaluation summary (others keep their key).
SUMMARY_LABELS = {
    "n_clot_cases": "Cases with a clot", "n_clot_free_cases": "Clot-free cases",
    "fp_components_per_case": "False-positive components per case",
    "fp_components_total": "False-positive components in all",
}

#: At most this many predicted clots are listed per case (largest first); the rest are
#: counted and stay in clots.csv.
MAX_CLOT_ROWS = 8

#: Per-case metrics shown on a card: (column of the evaluation CSV, label, decimals).
CASE_METRICS = [
    ("dice", "Dice", 3), ("hd95_mm", "HD95 (mm)", 2), ("assd_mm", "ASSD (mm)", 2),
    ("surface_dice_1mm", "Surface Dice at 1 mm", 3),
    ("ref_volume_mm3", "Reference volume (mm³)", 1),
    ("pred_volume_mm3", "Predicted volume (mm³)", 1),
    ("volume_error_mm3", "Volume error (mm³)", 1), ("volume_error_pct", "Volume error (%)", 1),
    ("ref_length_mm", "Reference length (mm)", 1), ("pred_length_mm", "Predicted length (mm)", 1),
    ("length_error_mm", "Length error (mm)", 1), ("fp_components", "False-positive components", 0),
]

#: Columns of clots.csv shown per predicted clot: (column, header, decimals).
CLOT_COLUMNS = [
    ("component", "#", 0), ("volume_mm3", "volume mm³", 1), ("length_mm", "length mm", 1),
    ("ncct_mean_hu", "NCCT mean HU", 1), ("ncct_median_hu", "NCCT median HU", 1),
    ("cta_mean_hu", "CTA mean HU", 1), ("perviousness_hu", "perviousness HU", 1),
    ("pervious", "pervious", None), ("max_prob", "max prob", 2),
]

DETECTION_TEXT = {"TP": "detected", "FN": "missed", "FP": "false positive",
                  "TN": "clot-free, none predicted"}


# ----------------------------------------------------------------------------- evaluation

def load_evaluation(eval_csv: str | Path) -> tuple[list[dict[str, str]], dict]:
    """Per-case rows of an evaluation CSV and its summary (``FILE.json``, may be absent)."""
    path = Path(eval_csv)
    if not path.is_file():
        raise ClotsegError(f"{path}: evaluation file does not exist (make it with "
                           "`clotseg evaluate PRED DATA --out FILE.csv`)")
    rows = read_csv(path)
    if rows and "case_id" not in rows[0]:
        raise ClotsegError(f"{path}: no case_id column; not an evaluation CSV")
    return rows, read_json(path.with_suffix(".json"))


def predicted_case_ids(pred: Path) -> list[str]:
    """Cases with a mask in PRED, plus cases ``predict`` recorded as failed."""
    from clotseg.io.readers import volume_suffix

    ids = set()
    for p in pred.iterdir():
        suffix = volume_suffix(p) if p.is_file() else None
        if suffix and not p.name[: -len(suffix)].endswith("_prob"):
            ids.add(p.name[: -len(suffix)])
    failed = read_json(pred / "predict.json").get("failed") or {}
    return sorted(ids | set(failed))


def compute_evaluation(pred: Path, index) -> tuple[list[dict], dict]:
    """Evaluate the predicted cases of PRED against DATA's masks (files go to a temp dir)."""
    from clotseg.metrics.evaluate import evaluate_dirs

    with_masks = {c.case_id for c in index.cases if c.mask is not None}
    cases = [c for c in predicted_case_ids(pred) if c in with_masks]
    if not cases:
        return [], {}
    with tempfile.TemporaryDirectory(prefix="clotseg-report-") as tmp:
        return evaluate_dirs(pred, index, Path(tmp) / "evaluation.csv", cases, progress=True)


def evaluation_view(summary: dict) -> dict | None:
    """Headline numbers, the metric table and the detection table from a summary dict."""
    if not summary:
        return None
    metrics = summary.get("metrics") or {}
    table = []
    for key in [*METRIC_LABELS, *(k for k in metrics if k not in METRIC_LABELS)]:
        st = metrics.get(key)
        if not isinstance(st, dict):
            continue
        dec = 3 if key in ("dice", "surface_dice_1mm") else 2
        table.append({"label": METRIC_LABELS.get(key, key), "median": fmt(st.get("median"), dec),
                      "iqr": (f"{fmt(st.get('q1'), dec)} – {fmt(st.get('q3'), dec)}"
                              if "q1" in st else DASH),
                      "mean": fmt(st.get("mean"), dec), "n": st.get("n", DASH),
                      "n_nan": st.get("n_nan", DASH)})
    d = metrics.get("dice") or {}
    missed = summary.get("missed") or []
    headline = [
        ("Dice median", fmt(d.get("median")),
         f"IQR {fmt(d.get('q1'))} – {fmt(d.get('q3'))}" if "q1" in d else ""),
        ("Sensitivity", fmt_pct(summary.get("sensitivity")),
         f"{summary.get('TP', DASH)} of {_sum(summary, 'TP', 'FN')} clots found"),
        ("Specificity", fmt_pct(summary.get("specificity")),
         f"{summary.get('TN', DASH)} of {_sum(summary, 'TN', 'FP')} clot-free cases"),
        ("Missed clots", str(len(missed)), f"of {summary.get('n_cases', DASH)} cases"),
    ]
    detection = [("Cases", str(summary.get("n_cases", DASH)))]
    detection += [(k, str(summary[k])) for k in ("TP", "FN", "FP", "TN") if k in summary]
    detection += [(label, ", ".join(map(str, summary.get(key) or [])) or "none")
                  for key, label in (("missed", "Missed clots"),
                                     ("false_positive_cases", "False-positive cases"),
                                     ("missing_predictions", "Missing predictions"))
                  if key in summary]
    if "distance_undefined" in summary:
        detection.append(("Cases with undefined distances", str(summary["distance_undefined"])))
    shown = {"metrics", "metrics_clot_cases", "n_cases", "TP", "FN", "FP", "TN", "missed",
             "false_positive_cases", "missing_predictions", "distance_undefined",
             "sensitivity", "specificity"}
    detection += [(SUMMARY_LABELS.get(k, k), fmt(v, 2) if isinstance(v, float) else str(v))
                  for k, v in summary.items()
                  if k not in shown and isinstance(v, (str, int, float))]
    return {"headline": headline, "metrics": table, "detection": detection}


def _sum(summary: dict, *keys: str) -> str:
    values = [summary.get(k) for k in keys]
    return str(sum(values)) if all(isinstance(v, int) for v in values) else DASH


# ----------------------------------------------------------------------------- case cards

def order_cases(case_ids: list[str], rows: dict[str, dict]) -> list[str]:
    """Worst first: missed clots and missing predictions, then ascending Dice, then cases
    without an evaluation (by id)."""
    def key(cid: str):
        r = rows.get(cid)
        if r is None:
            return (2, 0.0, cid)
        missed = r.get("detection") == "FN" or r.get("status", "ok") not in ("ok", "")
        dice = as_float(r.get("dice"))
        return (0 if missed else 1, -1.0 if dice is None else dice, cid)

    return sorted(case_ids, key=key)


def clot_rows(pred: Path | None) -> dict[str, list[dict[str, str]]] | None:
    """clots.csv rows grouped by case; None when there is no clots.csv."""
    if pred is None or not (pred / "clots.csv").is_file():
        return None
    grouped: dict[str, list[dict[str, str]]] = {}
    for r in read_csv(pred / "clots.csv"):
        grouped.setdefault(r.get("case_id", ""), []).append(r)
    return grouped


def patient_rows(pred: Path | None) -> dict[str, dict[str, str]]:
    """cases.csv rows by case (empty without a cases.csv): the QC score and review flag.

    Args:
        pred: prediction folder of ``clotseg predict``, or None.

    Examples:
        >>> patient_rows(None)
        {}
    """
    if pred is None or not (pred / "cases.csv").is_file():
        return {}
    return {r.get("case_id", ""): r for r in read_csv(pred / "cases.csv")}


def review_recommended(patient: dict | None) -> bool:
    """Whether ``predict`` flagged this case for review (cases.csv ``review``).

    Args:
        patient: the case's cases.csv row (text), or None.

    Examples:
        >>> review_recommended({"review": "True"}), review_recommended(None)
        (True, False)
    """
    return str((patient or {}).get("review", "")).strip().lower() == "true"


def patient_sentence(patient: dict | None) -> str:
    """The card's one-line reading of the occlusion from the case's ``cases.csv`` row
    (the primary clot and its fragments), e.g. ``"left clot, 14 mm long, pervious"``;
    empty without a row. Side, length and perviousness only: no arterial site is named,
    since no measurement labels one (:func:`clotseg.measure.side.describe_clot`).

    Examples:
        >>> patient_sentence({"has_clot": "True", "side": "left", "length_mm": "14.2",
        ...                   "pervious": "True", "clot_fragments": "2"})
        'left clot, 14 mm long, pervious (2 fragments)'
        >>> patient_sentence({"has_clot": "False"}), patient_sentence(None)
        ('no clot', '')
    """
    from clotseg.measure.side import describe_clot

    if not patient or "has_clot" not in patient:
        return ""
    found = str(patient.get("has_clot")).strip().lower() == "true"
    text = describe_clot({**patient, "component": 1 if found else 0})
    pieces = as_float(patient.get("clot_fragments"))
    if found and pieces is not None and pieces > 1:
        text += f" ({pieces:.0f} fragments)"
    return text


def review_summary(patients: dict[str, dict], case_ids: list[str]) -> str:
    """One line counting the cases flagged "review recommended" among ``case_ids``;
    empty when cases.csv has no QC columns (predicted before QC existed).

    Args:
        patients: cases.csv rows by case (:func:`patient_rows`).
        case_ids: the cases of the report.

    Examples:
        >>> review_summary({"a": {"review": "True"}, "b": {"review": "False"}}, ["a", "b"])[:17]
        '1 of 2 case(s) fl'
    """
    rows = [patients[c] for c in case_ids if c in patients]
    if not rows or not any("review" in r for r in rows):
        return ""
    flagged = sum(review_recommended(r) for r in rows)
    return f"{flagged} of {len(rows)} case(s) flagged \u201creview recommended\u201d by predict's QC score"


def ncct_on_cta_grid(ncct, cta, settings=None, case_id: str = "case"):
    """The NCCT on the CTA's voxel grid for drawing beside it (air, -1000 HU, outside),
    brought there exactly as ``predict`` brings it for the run's model: registered when
    the model was trained on registered data, else resampled in patient coordinates. So
    the NCCT panels show what the measurements used.

    Args:
        ncct: the case's NCCT :class:`~clotseg.io.volume.Volume`.
        cta: the case's CTA volume, whose grid the figures use.
        settings: the run's preprocessing (``ModelSpec.preprocess``), or None.
        case_id: named in an error when the scans do not overlap.
    """
    from clotseg.preprocess.pipeline import ncct_on_cta_grid as predict_ncct

    return predict_ncct(cta, ncct, settings, case_id=case_id)


def _figures(case, pred: Path | None, messages: list[str], settings=None
             ) -> tuple[str | None, str | None]:
    """Slices and MIP of one case as data URIs (reference green, prediction red)."""
    from clotseg.metrics.evaluate import find_prediction
    from clotseg.report.figures import clot_slices_png, mip_png

    vols = case.load()
    cta = vols.reference  # the CTA, or the NCCT of a case without one (masks lie on it)
    for name in ("cta", "ncct"):
        if getattr(vols, name) is None:
            messages.append(f"no {name.upper()} in this case: its panels are blank")
    ncct = (None if vols.ncct is None else vols.ncct if vols.cta is None
            else ncct_on_cta_grid(vols.ncct, cta, settings, case.case_id))
    ref = vols.mask
    if ref is not None and not ref.grid.same_as(cta.grid):
        messages.append("reference mask is not on the CTA grid; its outline is not drawn")
        ref = None
    mask = None
    path = find_prediction(pred, case.case_id) if pred is not None else None
    if pred is not None and path is None:
        messages.append("no predicted mask in the prediction folder")
    if path is not None:
        from clotseg.io.readers import read_volume

        mask = read_volume(path)
        if not mask.grid.same_as(cta.grid):
            messages.append(f"{path.name} is not on the CTA grid; its outline is not drawn")
            mask = None
    slices = data_uri(clot_slices_png(vols.cta, ncct, ref, mask, None))
    if vols.cta is None:  # the MIP shows contrast-filled vessels: a CTA's alone
        messages.append("no CTA: no MIP")
        return slices, None
    return slices, data_uri(mip_png(cta, ref, mask, None))


def case_card(cid: str, number: int, row: dict | None, clots: dict | None, index,
              pred: Path | None, settings=None, patient: dict | None = None) -> dict:
    """Everything the template shows for one case (``settings``: the run's preprocessing,
    so that the NCCT is aligned as ``predict`` aligned it; ``patient``: its cases.csv row,
    for the review badge)."""
    messages: list[str] = []
    slices = mip = None
    if index is not None:
        try:
            slices, mip = _figures(index[cid], pred, messages, settings)
        except KeyError:
            messages.append("case not found in the data folder; no images")
        except ClotsegError as exc:
            messages.append(f"cannot draw this case: {exc}")
    row = row or {}
    det = row.get("detection") or ""
    if row.get("status") not in (None, "", "ok"):
        messages.append(f"evaluation status: {row['status']}")
    metrics = [(label, fmt(row.get(k), dec)) for k, label, dec in CASE_METRICS if k in row]
    if str(row.get("distance_undefined", "")).lower() == "true":
        metrics.append(("Distances", "undefined"))
    case_clots = [] if clots is None else clots.get(cid, [])
    found = [r for r in case_clots if (as_float(r.get("component")) or 0) > 0]
    found.sort(key=lambda r: -(as_float(r.get("volume_mm3")) or 0.0))
    note = ("no clots.csv in the prediction folder" if clots is None else
            "no clot predicted" if case_clots else "case not in clots.csv")
    more = max(0, len(found) - MAX_CLOT_ROWS)
    return {
        "case_id": cid, "anchor": f"case-{number}", "detection": det,
        "detection_text": DETECTION_TEXT.get(det, det),
        "css": {"FN": "missed", "FP": "fp"}.get(det, ""),
        "dice": fmt(row.get("dice")), "hd95": fmt(row.get("hd95_mm"), 2),
        "n_clots": len(found) if clots is not None else DASH,
        "metrics": metrics, "messages": messages, "slices": slices, "mip": mip,
        "clots": [[fmt(r.get(c), d) for c, _, d in CLOT_COLUMNS]
                  for r in found[:MAX_CLOT_ROWS]],
        "clots_more": more, "clots_note": note,
        "review": review_recommended(patient), "qc_score": fmt((patient or {}).get("qc_score"), 2),
        "sentence": patient_sentence(patient),
    }
