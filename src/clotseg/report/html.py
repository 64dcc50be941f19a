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

This module assembles the page; :mod:`clotseg.report.run_facts` reads the run folder,
:mod:`clotseg.report.views` makes the evaluation tables and case cards, and
:mod:`clotseg.report.figures` draws the case images.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from clotseg.errors import ClotsegError
from clotseg.io.atomic import write_text
from clotseg.report.formatting import data_uri, read_json
from clotseg.report.run_facts import curves_png, load_run, run_summary
from clotseg.report.views import (
    CLOT_COLUMNS,
    case_card,
    clot_rows,
    compute_evaluation,
    evaluation_view,
    load_evaluation,
    order_cases,
    patient_rows,
    predicted_case_ids,
    review_summary,
)


def build_report(run: str | Path, out: str | Path | None = None, *,
                 pred: str | Path | None = None, data: str | Path | None = None,
                 eval_csv: str | Path | None = None, max_cases: int | None = None,
                 spacing=None, progress: bool = True) -> Path:
    """Write the HTML report of ``run`` to ``out`` (default ``RUN/report.html``).

    With ``pred`` and ``data`` each predicted case gets a card with figures; without
    ``eval_csv`` the evaluation is computed from them. Returns the report path.

    Args:
        run: the RUN folder (see :func:`clotseg.report.run_facts.load_run`).
        out: report file to write.
        pred: prediction folder of ``clotseg predict``.
        data: dataset with the images and reference masks of the predicted cases.
        eval_csv: per-case CSV of ``clotseg evaluate`` (its ``.json`` summary is read too).
        max_cases: show only this many cases, worst first.
        spacing: voxel size for ``.npy`` datasets.
        progress: a progress bar over the case cards.

    Examples:
        >>> build_report("runs/a", pred="pred", data="test_data")  # doctest: +SKIP
        PosixPath('runs/a/report.html')
    """
    info = load_run(run)
    out = Path(out) if out is not None else info.run.report_path
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
    settings = info.spec.preprocess if info.spec is not None else None
    patients = patient_rows(pred_dir)
    cards = [case_card(cid, i, by_case.get(cid), clots, index, pred_dir, settings,
                       patients.get(cid)) for i, cid in enumerate(it, start=1)]
    html = render({
        "title": info.path.resolve().name, "run_path": str(info.path),
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "run_summary": run_summary(info) + _input_rows(pred_dir, data, eval_csv),
        "curves": _uri_or_none(curves_png(info)), "evaluation": evaluation_view(summary),
        "eval_source": source, "cards": cards, "omitted": len(ordered) - len(shown),
        "review_summary": review_summary(patients, ordered),
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
        device = read_json(Path(pred) / "predict.json").get("device")
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
