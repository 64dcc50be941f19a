"""The HTML report: built from a small but real run folder, predictions and dataset.

The run folder has a real metrics.csv, config.yaml, splits.json, model.json and curves.png;
the dataset has hand-made CTA/NCCT/mask volumes (a vessel with a clot, anisotropic spacing,
one case with a flipped direction); the prediction folder has masks on the CTA grid and a
clots.csv measured by clotseg itself. One case id is an HTML injection attempt.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clotseg.cli import main
from clotseg.io.readers import write_volume
from clotseg.io.volume import Volume
from clotseg.measure.clots import measure_case, write_clots_csv
from clotseg.metrics.evaluate import evaluate_dirs
from clotseg.report.html import build_report

EVIL = "<script>alert(1)"  # folder names cannot hold "/", so no closing tag
AMP = "a&b <img src=x onerror=alert(2)>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


def _case_volumes(direction: np.ndarray, clot: bool, seed: int):
    """CTA, NCCT and reference mask: a bright vessel along j, occluded by a clot."""
    rng = np.random.default_rng(seed)
    shape, spacing = (40, 36, 14), (0.8, 0.8, 2.0)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    vessel = (i - 20) ** 2 + ((k - 7) * 2.5) ** 2 <= 9
    mask = vessel & (j >= 12) & (j < 22) if clot else np.zeros(shape, bool)
    cta = rng.normal(35, 4, shape) + 300 * (vessel & ~mask) + 20 * mask
    ncct = rng.normal(35, 4, shape) + 10 * vessel + 25 * mask
    geo = (spacing, (-16.0, -14.0, 5.0), direction.ravel())
    return (Volume(cta.astype(np.float32), *geo), Volume(ncct.astype(np.float32), *geo),
            Volume(mask.astype(np.uint8), *geo))


def make_fake_run(root: Path) -> dict[str, Path]:
    """Run folder, dataset, prediction folder and evaluation CSV under ``root``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, data, pred = root / "run", root / "data", root / "pred"
    (run / "checkpoints").mkdir(parents=True)
    metrics = "epoch,train_loss,val_dice,lr,seconds,slices_per_s,best\n" + "".join(
        f"{e},{1.2 - 0.1 * e:.3f},{0.1 * e:.3f},0.002,{30 + e},40.0,True\n" for e in range(1, 6))
    (run / "metrics.csv").write_text(metrics)
    cfg = {"model": {"name": "unet-original", "base": 16}, "data": {"slab": 3, "patch": 64},
           "train": {"epochs": 5, "batch_size": 16, "steps_per_epoch": 60, "device": "auto",
                     "loss": "dice_bce", "time_limit_min": 6.5},
           "optim": {"name": "adamw", "lr": 0.002, "schedule": "cosine"},
           "augment": {"enabled": True}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    cases = {"good": (np.eye(3), True), EVIL: (np.diag([-1.0, -1.0, 1.0]), True),
             "clean": (np.eye(3), False), AMP: (np.eye(3), False)}
    (run / "splits.json").write_text(json.dumps(
        {"scheme": "kfold", "seed": 0, "n_folds": 5, "fold": 0, "train": ["t1", "t2", "t3"],
         "val": ["v1"], "test": sorted(cases)}))
    (run / "model.json").write_text(json.dumps(
        {"model_name": "unet-original", "model_kwargs": {"base": 16}, "slab": 3,
         "threshold": 0.5, "min_component_mm3": 5.0, "grow_threshold": 0.5}))
    (run / "train.json").write_text(json.dumps(
        {"best_val_dice": 0.5, "best_epoch": 5, "epochs_done": 5, "seconds": 187.0,
         "stopped": "epochs", "device": "cpu", "world_size": 1, "data": str(data)}))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2, 3], [1.0, 0.8, 0.7])
    fig.savefig(run / "curves.png", format="png", dpi=60)
    plt.close(fig)

    rows = []
    for n, (cid, (direction, clot)) in enumerate(cases.items()):
        cta, ncct, ref = _case_volumes(direction, clot, n)
        for name, vol in (("cta", cta), ("ncct", ncct), ("clot", ref)):
            write_volume(vol, data / cid / f"{name}.nii.gz", mask=name == "clot")
        p = np.asarray(ref.array).copy()
        if cid == "good":
            p[:, 20:24] |= np.asarray(ref.array)[:, 14:18]  # over-segmented tail: Dice < 1
        elif cid == EVIL:
            p[:] = 0  # missed clot
        elif cid == AMP:
            p[5:9, 5:9, 3:6] = 1  # false-positive blob
        pmask = ref.with_array(p.astype(np.uint8))
        write_volume(pmask, pred / f"{cid}.nii.gz", mask=True)
        rows += measure_case(cid, pmask, cta, ncct)
    write_clots_csv(pred / "clots.csv", rows)
    eval_csv = root / "eval" / "evaluation.csv"
    evaluate_dirs(pred, data, eval_csv)
    return {"run": run, "data": data, "pred": pred, "eval": eval_csv}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(fake, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(fake["run"]), "--pred", str(fake["pred"]), "--data",
                 str(fake["data"]), "--out", str(out)]) == 0
    return out, out.read_text(encoding="utf-8")


class _Balance(HTMLParser):
    """Checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Balance:
    p = _Balance()
    p.feed(html)
    p.close()
    return p


def _attrs(html: str, name: str) -> list[str]:
    return re.findall(rf'\b{name}\s*=\s*"([^"]*)"', html)


def test_report_parses_balanced(report):
    _, html = report
    p = _parse(html)
    assert p.errors == [] and p.stack == []
    assert html.startswith("<!DOCTYPE html>")


def test_no_external_urls(report):
    _, html = report
    low = html.lower()
    assert "http://" not in low and "https://" not in low
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*//""", low)
    assert not re.search(r"""url\(\s*["']?\s*(?!data:)""", low)
    assert all(s.startswith("data:image/png;base64,") for s in _attrs(html, "src"))
    assert all(h.startswith("#") for h in _attrs(html, "href"))
    assert "<link" not in low and "@import" not in low


def test_case_ids_escaped(report):
    _, html = report
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "onerror" not in html.replace("onerror=alert(2)&gt;", "")
    assert "a&amp;b &lt;img src=x onerror=alert(2)&gt;" in html
    assert html.count("<script") == 1  # only the report's own inline script


def test_images_embedded_and_decode(report):
    _, html = report
    srcs = _attrs(html, "src")
    assert len(srcs) == 1 + 2 * 4  # curves + slices and MIP for each of the 4 cases
    for src in srcs:
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        img.load()
        assert img.format == "PNG" and img.width > 50 and img.height > 50


def test_worst_case_first_with_metrics_and_clots(report, fake):
    _, html = report
    text = " ".join(_parse(html).text)
    cards = re.findall(r'<article class="card[^"]*" id="case-(\d+)">\s*<div class="head">\s*'
                       r"<h3>([^<]*)</h3>", html)
    ids = [cid for _, cid in cards]
    assert ids[0] == "&lt;script&gt;alert(1)"  # missed clot first
    assert ids.index("good") < ids.index("clean")  # Dice < 1 before a clean true negative
    assert 'class="card missed"' in html and 'class="card fp"' in html
    clots = {r["case_id"]: r for r in _read_csv(fake["pred"] / "clots.csv")}
    assert f"{float(clots['good']['volume_mm3']):.1f}" in text
    assert f"{float(clots['good']['perviousness_hu']):.1f}" in text
    assert "no clot predicted" in text


def test_run_and_evaluation_summary(report, fake):
    _, html = report
    text = " ".join(_parse(html).text)
    assert "3 / 1 / 4" in text  # train / val / test sizes
    assert "cpu" in text and "3 min 07 s" in text  # device and training time
    assert "threshold 0.5, components under 5.0 mm³ dropped; the kept clot grown into " \
           "touching voxels of probability ≥ 0.5" in text  # predict's post-processing
    summary = json.loads(fake["eval"].with_suffix(".json").read_text())
    d = summary["metrics"]["dice"]
    assert f"{d['median']:.3f}" in text and f"{d['q1']:.3f} – {d['q3']:.3f}" in text
    for label in ("HD95 (mm)", "ASSD (mm)", "Surface Dice at 1 mm", "Sensitivity",
                  "Specificity", "Missed clots"):
        assert label in text
    assert summary["sensitivity"] == 0.5 and "50 %" in text


def test_eval_file_and_drawn_curves(fake, tmp_path):
    """--eval reads the evaluation file; without curves.png the curves come from metrics.csv."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.csv", "config.yaml", "splits.json"):
        (run / name).write_bytes((fake["run"] / name).read_bytes())
    out = build_report(run, tmp_path / "r.html", eval_csv=fake["eval"], max_cases=2,
                       progress=False)
    html = out.read_text()
    assert html.count('<article class="card') == 2 and "2 more case(s) not shown" in html
    assert "no figures: give --data DATA" in html
    srcs = _attrs(html, "src")
    assert len(srcs) == 1  # drawn curves; no data folder, so no case figures
    Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1]))).load()
    assert "from evaluation.csv" in html and "&lt;script&gt;" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "run"]  # no temp files


def test_bad_inputs_exit_1(tmp_path, fake, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "run folder does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert main(["report", str(fake["run"]), "--eval", str(tmp_path / "missing.csv"),
                 "--out", str(tmp_path / "r.html")]) == 1
    assert not (tmp_path / "r.html").exists()


def _read_csv(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_review_badge_and_count_from_cases_csv(fake, tmp_path):
    """A case ``predict`` flagged (cases.csv ``review``) gets a "review recommended"
    badge on its card, and the flagged cases are counted above the case list."""
    import shutil

    from clotseg.io.tables import write_csv
    from clotseg.measure.patient import PATIENT_CSV_COLUMNS

    pred = tmp_path / "pred"
    shutil.copytree(fake["pred"], pred)
    rows = [{"case_id": cid, "qc_score": 0.9 if cid == "good" else 0.1,
             "review": cid == "good", "has_clot": cid != "clean", "side": "left",
             "length_mm": 14.2, "pervious": False, "clot_fragments": 1}
            for cid in ("good", "clean", EVIL, AMP)]
    write_csv(pred / "cases.csv", rows, PATIENT_CSV_COLUMNS)
    out = tmp_path / "report.html"
    assert main(["report", str(fake["run"]), "--pred", str(pred), "--eval", str(fake["eval"]),
                 "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert html.count("review recommended</span>") == 1
    assert "1 of 4 case(s) flagged" in html
    good = html[html.index("<h3>good</h3>"):]
    assert good.index("review recommended") < good.index("</article>")
    # the occlusion in words, from the same cases.csv row (side from patient coordinates)
    assert good.index("Predicted: left clot, 14 mm long, not pervious.") < good.index(
        "</article>")
    clean = html[html.index("<h3>clean</h3>"):]
    assert clean.index("Predicted: no clot.") < clean.index("</article>")
    # without the QC columns (predicted before QC existed): no badge, no count
    (pred / "cases.csv").unlink()
    assert main(["report", str(fake["run"]), "--pred", str(pred), "--eval", str(fake["eval"]),
                 "--out", str(out)]) == 0
    assert "review recommended</span>" not in out.read_text(encoding="utf-8")


def test_the_expected_false_positive_share_is_stated_when_the_run_records_it():
    from clotseg.report.run_facts import _speck_text
    from clotseg.runs import TrainSummary

    got = _speck_text(TrainSummary(postprocess={"patients_with_speck": 5, "n_patients": 12}))
    assert got.startswith("5 of 12 validation patients") and "about 42 % of clot-free" in got
    assert _speck_text(TrainSummary(postprocess={"threshold": 0.8})) is None  # older run
    assert _speck_text(TrainSummary()) is None
