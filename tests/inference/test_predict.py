"""``clotseg predict`` and ``clotseg.segment`` end to end: layouts, broken cases, fold
ensembles, probability maps, previews, post-processing options and CLI errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import clotseg
from clotseg.api import segment_volumes
from clotseg.cli import main
from clotseg.io.readers import read_volume, write_volume
from tests.helpers import DIRECTIONS
from tests.inference.conftest import case_volumes, paint_mask, write_case, write_run

SHAPE = (16, 14, 10)


def _rows(out):
    with open(out / "clots.csv") as fh:
        return list(csv.DictReader(fh))


def test_broken_case_is_reported_and_others_finish(tmp_path, paint_run, capsys):
    data = tmp_path / "data"
    painted = paint_mask(SHAPE)
    for name in ("a_good", "c_good"):
        write_case(data / name, *case_volumes(painted, DIRECTIONS["oblique"]))
    bad = data / "b_corrupt"
    write_case(bad, *case_volumes(painted, DIRECTIONS["identity"]))
    (bad / "cta.nii.gz").write_text("this is not an image\n")
    # a folder with a mask but neither scan fails; one with only a CTA is predicted
    # (test_missing_modality.py) and so is not a broken case any more
    write_volume(case_volumes(painted, DIRECTIONS["identity"])[0].with_array(painted),
                 data / "d_no_scan" / "clot.nii.gz", mask=True)
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(data), str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "b_corrupt" in err and str(bad / "cta.nii.gz") in err
    assert "d_no_scan" in err and "neither a CTA nor an NCCT" in err
    for name in ("a_good", "c_good"):
        np.testing.assert_array_equal(read_volume(out / f"{name}.nii.gz").array, painted)
    assert not (out / "b_corrupt.nii.gz").exists() and not (out / "d_no_scan.nii.gz").exists()
    rows = _rows(out)
    assert {r["case_id"] for r in rows} == {"a_good", "c_good"}
    assert all(r["n_components"] == "2" for r in rows)
    summary = json.loads((out / "predict.json").read_text())
    assert summary["ok"] == ["a_good", "c_good"] and summary["complete"]
    assert set(summary["failed"]) == {"b_corrupt", "d_no_scan"}
    failure = next(f for f in summary["failures"] if f["case_id"] == "b_corrupt")
    assert failure["file"] == str(bad / "cta.nii.gz")


def _tick_clock(monkeypatch) -> None:
    """Every clock read of the stage timers and the per-case timer returns the next
    integer: durations become counts of reads on one shared clock (no wall time)."""
    import itertools
    import types

    ticks = itertools.count()
    fake = types.SimpleNamespace(perf_counter=lambda: float(next(ticks)),
                                 process_time=lambda: float(next(ticks)))
    monkeypatch.setattr("clotseg.timing.time", fake)
    monkeypatch.setattr("clotseg.inference.cases.time", fake)


def test_fold_ensemble_averages_and_prob_map_on_cta_grid(tmp_path, paint_run, monkeypatch):
    _tick_clock(monkeypatch)  # the stage accounting below is checked on a fake clock
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["permuted"], spacing=(0.5, 0.7, 1.5))
    write_case(tmp_path / "case7", cta, ncct, ".nrrd")
    const = write_run(tmp_path / "run_const", "test-const", {"logit": -1.0})
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(tmp_path / "case7"), str(out), "--runs",
                 str(const), "--save-prob", "--preview", "--quiet"]) == 0
    prob = read_volume(out / "case7_prob.nii.gz")
    assert prob.array.dtype == np.float32
    assert prob.grid.same_as(read_volume(tmp_path / "case7" / "cta.nrrd").grid)
    s = 1 / (1 + np.exp(-10.0))
    low = 1 / (1 + np.exp(1.0))
    want = np.where(painted > 0, s, 1 - s) / 2 + low / 2
    np.testing.assert_allclose(prob.array, want, atol=1e-6)
    np.testing.assert_array_equal(read_volume(out / "case7.nii.gz").array, painted)
    assert (out / "case7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "predict.json").read_text())
    assert len(summary["runs"]) == 2 and summary["device"] == "cpu"
    stages = summary["predict_stage_seconds"]["case7"]  # where the time of a case went
    assert {"infer", "normalise", "postprocess", "ncct_on_cta"} <= set(stages)
    assert all(v > 0 and float(v).is_integer() for v in stages.values())  # fake-clock reads
    # the stages lie inside the case's predict step: no stage counted twice or outside
    assert sum(stages.values()) <= summary["seconds"]["case7"]["predict"]


def test_post_processing_options_in_mm3(tmp_path, paint_run):
    painted = paint_mask(SHAPE)  # L-shaped clot and an 8-voxel blob
    spacing = (0.5, 0.5, 2.0)  # 0.5 mm³ voxels: the blob is 4 mm³
    write_case(tmp_path / "d" / "c", *case_volumes(painted, DIRECTIONS["identity"], spacing))
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(out), "--min-volume",
                 "5", "--quiet"]) == 0
    mask = read_volume(out / "c.nii.gz").array
    assert mask.sum() == painted.sum() - 8 and not mask[1:3, 1:3, 1:3].any()
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(out), "--min-volume",
                 "3.9", "--quiet"]) == 0
    assert read_volume(out / "c.nii.gz").array.sum() == painted.sum()
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(out), "--keep-largest",
                 "--quiet"]) == 0
    assert read_volume(out / "c.nii.gz").array.sum() == painted.sum() - 8
    assert [r["component"] for r in _rows(out)] == ["1"]


def test_primary_clot_rule_drops_a_distant_speck_and_says_so(tmp_path, paint_run):
    shape = (80, 16, 10)
    painted = paint_mask(shape)  # L-shaped clot at the centre, an 8-voxel blob at a corner
    spacing = (0.5, 0.5, 2.0)  # blob 4 mm³, about 16 mm from the clot along axis 0
    write_case(tmp_path / "d" / "c", *case_volumes(painted, DIRECTIONS["identity"], spacing))
    out, out_all = tmp_path / "out", tmp_path / "out_all"
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(out), "--quiet"]) == 0
    mask = read_volume(out / "c.nii.gz").array
    assert mask.sum() == painted.sum() - 8 and not mask[1:3, 1:3, 1:3].any()
    summary = json.loads((out / "predict.json").read_text())
    assert summary["primary_clot_only"] is True
    (speck,) = summary["dropped_components"]["c"]
    assert speck["volume_mm3"] == pytest.approx(4.0)
    assert 10.0 < speck["distance_mm"] < 20.0
    with open(out / "cases.csv") as fh:
        (patient,) = list(csv.DictReader(fh))
    assert patient["other_components"] == "1"
    assert float(patient["other_volume_mm3"]) == pytest.approx(4.0)
    assert len(_rows(out)) == 1
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(out_all), "--quiet",
                 "--all-components"]) == 0
    assert (read_volume(out_all / "c.nii.gz").array == painted).all()
    assert json.loads((out_all / "predict.json").read_text())["dropped_components"] == {}
    assert len(_rows(out_all)) == 2


def test_confirming_run_keeps_only_the_components_it_also_marks(tmp_path, paint_run, capsys):
    # The detector (paints what is bright on the CTA) finds the L-shaped clot and the
    # blob; the confirming run reads the NCCT, where only the L-shaped clot is bright.
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["identity"], (0.5, 0.5, 2.0))
    ncct_arr = np.asarray(ncct.array).copy()
    ncct_arr[(painted > 0) & (np.arange(SHAPE[0])[:, None, None] > 3)] = 600  # not the blob
    write_case(tmp_path / "d" / "c", cta, ncct.with_array(ncct_arr))
    confirm = write_run(tmp_path / "run_ncct", "test-paint",
                        {"in_channels": 2, "modality": "ncct"}, threshold=0.7)
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(out), "--quiet",
                 "--all-components", "--confirm-with", str(confirm)]) == 0
    mask = read_volume(out / "c.nii.gz").array
    assert mask.sum() == painted.sum() - 8 and not mask[1:3, 1:3, 1:3].any()
    summary = json.loads((out / "predict.json").read_text())
    assert summary["confirm_runs"] == [str(confirm)] and summary["confirm_threshold"] == 0.7
    (blob,) = summary["dropped_components"]["c"]
    assert blob["reason"] == "unconfirmed" and blob["volume_mm3"] == pytest.approx(4.0)
    assert blob["confirm_max_prob"] < 0.01 and blob["max_prob"] > 0.99
    with open(out / "cases.csv") as fh:
        (patient,) = list(csv.DictReader(fh))
    assert patient["other_components"] == "1"
    # The review score reads the confirming run's own clot: here the same L-shaped clot.
    assert summary["qc"]["c"]["signals"]["disagreement"] == 0
    assert "overlap by a Dice of at most 0.5" in summary["qc_flag"]["note"]
    # Asking for a confirming probability the other run never reaches drops everything.
    assert main(["predict", str(paint_run), str(tmp_path / "d"), str(tmp_path / "none"),
                 "--quiet", "--confirm-with", str(confirm), "--confirm-threshold", "1"]) == 0
    assert not read_volume(tmp_path / "none" / "c.nii.gz").array.any()
    # A threshold without a confirming run, or outside (0, 1], is a usage error.
    capsys.readouterr()
    args = ["predict", str(paint_run), str(tmp_path / "d"), str(tmp_path / "bad")]
    assert main([*args, "--confirm-threshold", "0.5"]) == 2
    assert "needs --confirm-with" in capsys.readouterr().err
    assert main([*args, "--confirm-with", str(confirm), "--confirm-threshold", "0"]) == 2
    assert main([*args, "--confirm-with", str(tmp_path / "missing_run")]) == 1
    assert "missing_run" in capsys.readouterr().err and not (tmp_path / "bad" / "c.nii.gz"
                                                            ).exists()


def test_original_npy_layout_with_spacing(tmp_path, paint_run):
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, np.eye(3))
    vol_dir = tmp_path / "orig" / "DL_vol_files" / "binary"
    vol_dir.mkdir(parents=True)
    write_volume(cta, vol_dir / "P3_CTA_Binary.npy")
    write_volume(ncct, vol_dir / "P3_NCCT_Reg_Binary.npy")
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(tmp_path / "orig"), str(out), "--spacing",
                 "0.5", "0.6", "2.5", "--quiet"]) == 0
    mask = read_volume(out / "P3.nii.gz")
    np.testing.assert_allclose(mask.spacing, (0.5, 0.6, 2.5), atol=1e-6)
    np.testing.assert_array_equal(mask.array, painted)


def test_nnunet_layout_predicts_imagesTs(tmp_path, paint_run):
    root = tmp_path / "nn"
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["ras_flip"])
    for folder, case_id in (("imagesTr", "tr_001"), ("imagesTs", "ts_001"),
                            ("imagesTs", "ts_002")):
        write_volume(cta, root / folder / f"{case_id}_0000.nii.gz")
        write_volume(ncct, root / folder / f"{case_id}_0001.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CTA",
                                                                     "1": "NCCT"}}))
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(root), str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ts_001.nii.gz", "ts_002.nii.gz"]
    np.testing.assert_array_equal(read_volume(out / "ts_002.nii.gz").array, painted)
    out2 = tmp_path / "out2"  # pointing at imagesTr itself
    assert main(["predict", str(paint_run), str(root / "imagesTr"), str(out2),
                 "--quiet"]) == 0
    assert [p.name for p in out2.glob("*.nii.gz")] == ["tr_001.nii.gz"]


def test_python_api_in_memory(tmp_path, paint_run):
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["oblique"])
    mask, prob, rows = segment_volumes(paint_run, cta, ncct, device="cpu")
    assert mask.grid.same_as(cta.grid) and prob.shape == cta.shape
    np.testing.assert_array_equal(mask.array, painted)
    assert len(rows) == 2 and rows[0]["volume_mm3"] > rows[1]["volume_mm3"]
    write_case(tmp_path / "c", cta, ncct, ".mha")
    results = clotseg.segment(paint_run, tmp_path / "c", progress=False)
    assert [r.case_id for r in results] == ["c"] and results[0].ok
    np.testing.assert_array_equal(results[0].mask.array, painted)
    assert not list(tmp_path.glob("**/*.csv"))  # nothing written without OUT


def test_dicom_folder_with_both_series(tmp_path, paint_run):
    from tests.inference.conftest import write_dicom_series

    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["identity"], spacing=(0.5, 0.5, 2.0))
    folder = tmp_path / "PAT1"
    uid_cta = write_dicom_series(folder / "a", cta, "CTA head angio")
    uid_ncct = write_dicom_series(folder / "b", ncct, "Head plain")
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(folder), str(out), "--cta-series", uid_cta,
                 "--ncct-series", uid_ncct, "--quiet"]) == 0
    np.testing.assert_array_equal(read_volume(out / "PAT1.nii.gz").array, painted)
    swapped = tmp_path / "swapped"  # NCCT as CTA: no bright clot voxels, empty mask
    assert main(["predict", str(paint_run), str(folder), str(swapped), "--cta-series",
                 uid_ncct, "--ncct-series", uid_cta, "--quiet"]) == 0
    assert read_volume(swapped / "PAT1.nii.gz").array.sum() == 0
    said = {name: json.loads((where / "predict.json").read_text())["warnings"].get("PAT1", [])
            for name, where in (("right", out), ("swapped", swapped))}
    assert not any("look swapped" in w for w in said["right"])
    assert any("look swapped" in w for w in said["swapped"])  # and the user is told


@pytest.mark.parametrize("setup, message", [
    ("plain_folder", "not a trained run folder"),
    ("missing", "not a run folder"),
    ("bad_checkpoint", "cannot load checkpoint"),
    ("unknown_model", "cannot rebuild"),
])
def test_bad_run_folder_is_exit_1_with_message(tmp_path, capsys, setup, message):
    write_case(tmp_path / "data" / "c", *case_volumes(paint_mask(SHAPE), np.eye(3)))
    run = tmp_path / "run"
    if setup == "plain_folder":
        run.mkdir()
    elif setup == "bad_checkpoint":
        write_run(run, "test-paint")
        (run / "checkpoints" / "best.pt").write_bytes(b"garbage")
    elif setup == "unknown_model":
        write_run(run, "test-paint")
        spec = json.loads((run / "model.json").read_text())
        (run / "model.json").write_text(json.dumps({**spec, "model_name": "no-such-net"}))
    code = main(["predict", str(run), str(tmp_path / "data"), str(tmp_path / "out"),
                 "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and str(run) in err and "Traceback" not in err
    assert not (tmp_path / "out" / "c.nii.gz").exists()


def test_usage_errors(tmp_path, paint_run, capsys):
    write_case(tmp_path / "data" / "c", *case_volumes(paint_mask(SHAPE), np.eye(3)))
    args = ["predict", str(paint_run), str(tmp_path / "data"), str(tmp_path / "out")]
    assert main([*args, "--threshold", "1.5"]) == 2
    assert main([*args, "--device", "tpu"]) == 1
    assert main(["predict", str(paint_run), str(tmp_path / "nowhere"), str(tmp_path / "o")]
                ) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("spacing", [None, (0.7, 0.7, 1.0)])
def test_run_trained_on_preprocessed_data_maps_back_to_cta_grid(tmp_path, spacing):
    from clotseg.preprocess.pipeline import PreprocessSettings

    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["oblique"])
    settings = PreprocessSettings(register=False, roi="none", spacing=spacing)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2}, preprocess=settings)
    mask, prob, _ = segment_volumes(run, cta, ncct, device="cpu")
    assert mask.grid.same_as(cta.grid) and prob.shape == cta.shape
    if spacing is None:  # nothing resampled: exact
        np.testing.assert_array_equal(mask.array, painted)
    else:  # resampled there and back: the clot's core is found, its volume kept
        core = painted.astype(bool)
        got = mask.array.astype(bool)
        dice = 2 * (core & got).sum() / (core.sum() + got.sum())
        assert dice > 0.8 and (prob[~core] < 0.99).all()


def test_kept_clot_grows_to_the_runs_grow_threshold_and_not_into_a_dropped_speck(
        tmp_path, paint_run):
    """``predict`` keeps the primary clot, then grows it into its touching voxels of at
    least ``model.json``'s ``grow_threshold``: the clot's faint tail joins it, a faint
    separate blob and the dropped speck stay out; a run without the field (trained before
    it existed) does not grow."""
    from clotseg.inference.ensemble import EnsembleOutput
    from clotseg.inference.predictor import Predictor
    from clotseg.io.volume import Volume
    from clotseg.runs import load_model_spec, save_model_spec

    prob = np.zeros((60, 8, 6), np.float32)
    prob[10:20, 4, 3] = 0.95  # core of the clot
    prob[20:30, 4, 3] = 0.4  # its faint tail
    prob[50:53, 4, 3] = 0.9  # a speck 15 mm away, which the primary-clot rule drops
    prob[30:50, 4, 3] = 0.35  # a faint bridge from the clot's tail to the speck
    prob[2:5, 1, 1] = 0.45  # a faint separate blob
    vol = Volume(np.zeros(prob.shape, np.int16), (0.5, 0.5, 0.5))
    spec = load_model_spec(paint_run)
    # Grown along tail and bridge up to the speck, whose voxels stay dropped.
    for grow, expected in ((0.3, set(range(10, 50))), (None, set(range(10, 20)))):
        spec.threshold, spec.grow_threshold = 0.5, grow
        save_model_spec(paint_run, spec)
        pred = Predictor.from_runs(paint_run, device="cpu")
        pred._ensemble = lambda cta, ncct, case_id, support, confirm=False: (
            EnsembleOutput(prob), None, None)
        seg = pred.segment(vol, vol, "c")
        mask = np.asarray(seg.mask.array)
        assert set(mask[:, 4, 3].nonzero()[0].tolist()) == expected, grow
        assert not mask[50:53].any() and not mask[2:5, 1, 1].any()
        assert pred.post["grow_threshold"] == (grow or 0.0)
        assert len(seg.dropped) == 1
    # With a confirming run, the clot grows only where both probabilities reach the grow
    # threshold: the confirming map covers the core and the first half of the tail.
    second = np.zeros_like(prob)
    second[10:25, 4, 3] = 0.6
    pred.confirmers = [pred.members[0]]
    pred.members[0].spec.grow_threshold = 0.3
    pred._ensemble = lambda cta, ncct, case_id, support, confirm=False: (
        EnsembleOutput(prob), None, second)
    seg = pred.segment(vol, vol, "c")
    assert set(np.asarray(seg.mask.array)[:, 4, 3].nonzero()[0].tolist()) == set(range(10, 25))
    # The speck, which the confirming map does not mark, goes before the primary rule.
    assert [d.get("reason") for d in seg.dropped] == ["unconfirmed"]
