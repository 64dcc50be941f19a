"""The self-contained HTML report of a run (``clotseg report``).

One HTML file with everything inline: CSS, PNG figures as base64 ``data:`` URIs and a tiny
inline script that records on ``<body data-broken-images=...>`` how many images failed
to decode (a browser test reads it). No external URL appears anywhere, and a
Content-Security-Policy forbids loading anything but embedded data, so the file opens
offline and cannot leak requests. Every user-provided string (case ids, paths, config
values) goes through jinja2 autoescaping.

Sections: run summary (config highlights, data, splits, training time, device), training
curves, evaluation summary, and one card per case (axial slices through the clot, MIP,
metrics, measured clots), worst case first.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clotseg.errors import ClotsegError
from clotseg.io.atomic import write_text

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
DASH = "–"


# ----------------------------------------------------------------------------- formatting

def as_float(value: Any) -> float | None:
    """A finite float from a CSV cell or JSON value, else None ("", "nan", text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(value: Any, decimals: int | None = 3) -> str:
    """Numbers with ``decimals`` places, missing/NaN as a dash, anything else as text."""
    if decimals is None:
        return DASH if value in (None, "") else str(value)
    f = as_float(value)
    if f is None:
        return DASH if value in (None, "") or str(value).lower() == "nan" else str(value)
    return f"{f:.{decimals}f}"


def fmt_pct(value: Any) -> str:
    f = as_float(value)
    return DASH if f is None else f"{100 * f:.0f} %"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def data_uri(png: bytes) -> str:
    """Embed PNG bytes as a ``data:`` URI (the report never links to files)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ----------------------------------------------------------------------------- run folder

def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dictionaries of strings; a clear error if unreadable."""
    try:
        from clotseg.io.tables import csv_cell_text

        with path.open(newline="", encoding="utf-8") as f:
            return [{k: csv_cell_text(v) if isinstance(v, str) else v for k, v in r.items()}
                    for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClotsegError(f"{path}: cannot read CSV ({exc})") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClotsegError(f"{path}: cannot read JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ClotsegError(f"{path}: cannot read YAML ({exc})") from None
    return data if isinstance(data, dict) else {}


def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class RunInfo:
    """What the report shows about a RUN folder; every part may be missing."""

    path: Path
    config: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # train.json, written when training ends
    metrics: list[dict[str, str]] = field(default_factory=list)


def load_run(run: str | Path) -> RunInfo:
    """Read what exists of a RUN folder; error if it is not a run folder at all."""
    path = Path(run)
    if not path.is_dir():
        raise ClotsegError(f"{run}: run folder does not exist (expected a folder made by "
                           "`clotseg train`)")
    names = ("config.yaml", "splits.json", "model.json", "metrics.csv")
    if not any((path / n).is_file() for n in names):
        raise ClotsegError(f"{run}: not a run folder (none of {', '.join(names)} found)")
    metrics = read_csv(path / "metrics.csv") if (path / "metrics.csv").is_file() else []
    return RunInfo(path, _read_yaml(path / "config.yaml"), _read_json(path / "splits.json"),
                   _read_json(path / "model.json"), _read_json(path / "train.json"), metrics)


def _column(rows: list[dict[str, str]], name: str) -> list[float | None]:
    return [as_float(r.get(name)) for r in rows]


def run_summary(info: RunInfo) -> list[tuple[str, str]]:
    """(label, value) rows: data, splits, model, training settings, time and device."""
    cfg, sp, tr, mdl = info.config, info.splits, info.train, info.model
    rows: list[tuple[str, str]] = []
    if tr.get("data"):
        rows.append(("Training data", str(tr["data"])))
    if sp:
        sizes = " / ".join(f"{len(sp.get(k) or [])}" for k in ("train", "val", "test"))
        scheme = str(sp.get("scheme") or DASH)
        if sp.get("fold") is not None and sp.get("n_folds"):
            scheme += f", fold {sp['fold']} of {sp['n_folds']}"
        rows += [("Cases train / val / test", sizes), ("Split", f"{scheme}, seed {sp.get('seed')}")]
    name = _get(cfg, "model.name") or mdl.get("model_name")
    if name:
        width = _get(cfg, "model.base")
        rows.append(("Model", f"{name}" + (f", base width {width}" if width else "")))
    slab = _get(cfg, "data.slab") or mdl.get("slab")
    if slab:
        rows.append(("Input", f"{slab} slice(s) per modality (CTA + NCCT)"
                     + (f", training crop {_get(cfg, 'data.patch')} px"
                        if _get(cfg, "data.patch") else "")))
    batch, steps = _get(cfg, "train.batch_size"), _get(cfg, "train.steps_per_epoch")
    if batch:
        rows.append(("Batch", f"{batch} slices" + (f", {steps} steps per epoch" if steps else "")))
    optim = _get(cfg, "optim.name")
    if optim:
        rows.append(("Optimiser", f"{optim}, lr {_get(cfg, 'optim.lr')}, "
                                  f"{_get(cfg, 'optim.schedule')} schedule"))
    if _get(cfg, "train.loss"):
        rows.append(("Loss", str(_get(cfg, "train.loss"))))
    if _get(cfg, "augment.enabled") is not None:
        rows.append(("Augmentation", "on" if _get(cfg, "augment.enabled") else "off"))
    rows += _training_rows(info)
    if mdl.get("threshold") is not None:
        tuned = info.train.get("postprocess") or {}
        how = ""
        if tuned:
            how = (f" (chosen on validation: Dice {tuned['val_dice']:.3f} vs "
                   f"{tuned['configured_val_dice']:.3f} with the configured values)"
                   if tuned.get("changed") else " (configured; tuning on validation kept it)")
        rows.append(("Inference", f"threshold {mdl.get('threshold')}, components under "
                                  f"{mdl.get('min_component_mm3')} mm³ dropped{how}"))
    return rows


def _training_rows(info: RunInfo) -> list[tuple[str, str]]:
    cfg, tr = info.config, info.train
    epochs_cfg = _get(cfg, "train.epochs")
    done = tr.get("epochs_done", len(info.metrics))
    rows = [("Epochs", f"{done}" + (f" of {epochs_cfg}" if epochs_cfg else "")
             + (f" (stopped: {tr['stopped']})" if tr.get("stopped") else ""))]
    dice = _column(info.metrics, "val_dice")
    if tr.get("best_val_dice") is not None:
        rows.append(("Best validation Dice", f"{fmt(tr['best_val_dice'])} "
                                             f"(epoch {tr.get('best_epoch', DASH)})"))
    elif any(d is not None for d in dice):
        best = max(range(len(dice)), key=lambda i: -1 if dice[i] is None else dice[i])
        rows.append(("Best validation Dice", f"{fmt(dice[best])} (epoch "
                                             f"{info.metrics[best].get('epoch', best + 1)})"))
    secs = as_float(tr.get("seconds"))
    if secs is None:
        known = [s for s in _column(info.metrics, "seconds") if s is not None]
        secs = sum(known) if known else None
    rows.append(("Training time", fmt_duration(secs)))
    if _get(cfg, "train.time_limit_min"):
        rows.append(("Time limit", f"{_get(cfg, 'train.time_limit_min')} min"))
    device = tr.get("device") or _get(cfg, "train.device")
    if device:
        world = tr.get("world_size")
        rows.append(("Device", f"{device}" + (f" × {world} processes" if world and world > 1
                                              else "")))
    return rows


def curves_png(info: RunInfo) -> bytes | None:
    """``RUN/curves.png`` if it is a readable image, else drawn from metrics.csv."""
    path = info.path / "curves.png"
    if path.is_file():
        data = path.read_bytes()
        if _is_image(data):
            return data
    return draw_curves(info.metrics)


def _is_image(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return True


def draw_curves(rows: list[dict[str, str]]) -> bytes | None:
    """Training loss and validation Dice per epoch; None when there is nothing to draw."""
    loss, dice = _column(rows, "train_loss"), _column(rows, "val_dice")
    if not any(v is not None for v in loss + dice):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [as_float(r.get("epoch")) or i + 1 for i, r in enumerate(rows)]
    nan = float("nan")
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [nan if v is None else v for v in loss], "o-", color="tab:blue")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [nan if v is None else v for v in dice], "s-", color="tab:red")
    ax2.set_ylabel("validation Dice", color="tab:red")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


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
    return rows, _read_json(path.with_suffix(".json"))


def predicted_case_ids(pred: Path) -> list[str]:
    """Cases with a mask in PRED, plus cases ``predict`` recorded as failed."""
    from clotseg.io.readers import volume_suffix

    ids = set()
    for p in pred.iterdir():
        suffix = volume_suffix(p) if p.is_file() else None
        if suffix and not p.name[: -len(suffix)].endswith("_prob"):
            ids.add(p.name[: -len(suffix)])
    failed = _read_json(pred / "predict.json").get("failed") or {}
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


def _figures(case, pred: Path | None, messages: list[str]) -> tuple[str | None, str | None]:
    """Slices and MIP of one case as data URIs (reference green, prediction red)."""
    from clotseg.metrics.evaluate import find_prediction
    from clotseg.report.figures import clot_slices_png, mip_png

    vols = case.load()
    cta, ncct = vols.cta, vols.ncct
    if not ncct.grid.same_as(cta.grid):
        from clotseg.preprocess.resample import resample_to_grid

        ncct = resample_to_grid(ncct, cta.grid, default_value=-1000.0)
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
    return (data_uri(clot_slices_png(cta, ncct, ref, mask, None)),
            data_uri(mip_png(cta, ref, mask, None)))


def case_card(cid: str, number: int, row: dict | None, clots: dict | None, index,
              pred: Path | None) -> dict:
    """Everything the template shows for one case."""
    messages: list[str] = []
    slices = mip = None
    if index is not None:
        try:
            slices, mip = _figures(index[cid], pred, messages)
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
    }


# ----------------------------------------------------------------------------- the report

def build_report(run: str | Path, out: str | Path | None = None, *,
                 pred: str | Path | None = None, data: str | Path | None = None,
                 eval_csv: str | Path | None = None, max_cases: int | None = None,
                 spacing=None, progress: bool = True) -> Path:
    """Write the HTML report of ``run`` to ``out`` (default ``RUN/report.html``).

    With ``pred`` and ``data`` each predicted case gets a card with figures; without
    ``eval_csv`` the evaluation is computed from them. Returns the report path.
    """
    info = load_run(run)
    out = Path(out) if out is not None else info.path / "report.html"
    pred_dir = Path(pred) if pred is not None else None
    if pred_dir is not None and not pred_dir.is_dir():
        raise ClotsegError(f"{pred_dir}: prediction folder does not exist")
    index = None
    if data is not None:
        from clotseg.io.layouts import discover

        index = discover(data, spacing=spacing)
    rows, summary, source = _evaluation(eval_csv, pred_dir, index)
    by_case = {str(r.get("case_id")): r for r in rows}
    ids = set(by_case)
    if pred_dir is not None:
        ids |= set(predicted_case_ids(pred_dir))
    ordered = order_cases(sorted(ids), by_case)
    shown = ordered if max_cases is None else ordered[:max(0, max_cases)]
    clots = clot_rows(pred_dir)
    it = shown
    if progress and shown:
        from tqdm import tqdm

        it = tqdm(shown, desc="report", unit="case")
    cards = [case_card(cid, i, by_case.get(cid), clots, index, pred_dir)
             for i, cid in enumerate(it, start=1)]
    html = render({
        "title": info.path.resolve().name, "run_path": str(info.path),
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "run_summary": run_summary(info) + _input_rows(pred_dir, data, eval_csv),
        "curves": _uri_or_none(curves_png(info)), "evaluation": evaluation_view(summary),
        "eval_source": source, "cards": cards, "omitted": len(ordered) - len(shown),
        "clot_headers": [h for _, h, _ in CLOT_COLUMNS],
        "figures_note": "" if index is not None else "no figures: give --data DATA",
    })
    write_text(out, html)
    return out


def _uri_or_none(png: bytes | None) -> str | None:
    return None if png is None else data_uri(png)


def _input_rows(pred, data, eval_csv) -> list[tuple[str, str]]:
    rows = []
    if pred is not None:
        rows.append(("Predictions", str(pred)))
        device = _read_json(Path(pred) / "predict.json").get("device")
        if device:
            rows.append(("Inference device", str(device)))
    if data is not None:
        rows.append(("Reference data", str(data)))
    if eval_csv is not None:
        rows.append(("Evaluation file", str(eval_csv)))
    return rows


def _evaluation(eval_csv, pred_dir, index) -> tuple[list[dict], dict, str]:
    if eval_csv is not None:
        rows, summary = load_evaluation(eval_csv)
        return rows, summary, f"from {Path(eval_csv).name}"
    if pred_dir is not None and index is not None:
        rows, summary = compute_evaluation(pred_dir, index)
        return rows, summary, "computed from the predictions and reference masks"
    return [], {}, ""


def render(context: dict) -> str:
    """Render the packaged template with autoescaping on (all strings are escaped)."""
    import jinja2

    from clotseg import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("clotseg", "report/templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html").render(version=__version__, **context)
