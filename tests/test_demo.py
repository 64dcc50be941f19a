"""`clotseg demo`: the whole pipeline end to end (quick mode), and its failure handling."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.demo import DemoStageError, run_cli
from clotseg.io.readers import read_volume


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "--out", str(out), "--quick", "--seed", "1"]) == 0
    elapsed = time.perf_counter() - t0
    printed = capsys.readouterr().out
    for n, stage in enumerate(("synth", "train", "predict", "evaluate", "report"), start=1):
        assert f"[{n}/5] {stage}" in printed
    assert f"report: {out / 'report.html'}" in printed and "Dice median" in printed

    splits = json.loads((out / "run" / "splits.json").read_text())
    test = splits["test"]
    assert test and not set(test) & set(splits["train"] + splits["val"])
    assert sorted(p.name for p in (out / "test_data").iterdir()) == sorted(test)
    for cid in test:  # masks written on exactly the CTA grid of each held-out case
        mask = read_volume(out / "pred" / f"{cid}.nii.gz")
        cta = read_volume(out / "data" / cid / "cta.nii.gz")
        assert mask.grid.same_as(cta.grid)
        assert set(np.unique(np.asarray(mask.array))) <= {0, 1}
        assert (out / "pred" / f"{cid}.png").is_file()
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["n_cases"] == len(test)
    html = (out / "report.html").read_text()
    assert all(cid in html for cid in test) and "data:image/png;base64," in html
    print(f"quick demo: {elapsed:.0f} s")  # timing is reported, never asserted


def test_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 1
    assert "was not made by `clotseg demo`" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_failed_stage_is_named(tmp_path):
    with pytest.raises(DemoStageError, match="stage 'evaluate' failed"):
        run_cli("evaluate", ["evaluate", str(tmp_path / "no_pred"), str(tmp_path / "no_data"),
                             "--out", str(tmp_path / "e.csv")], echo=lambda m: None)
    assert main(["demo", "--out", str(tmp_path / "d"), "--cases", "2"]) == 2
