"""Real (tiny) training runs on the phantom: artifacts, resume, time limit, errors,
presets and torchrun with two processes."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml

from clotseg.cli import main
from clotseg.runs import load_model, load_model_spec
from tests.training.conftest import TINY, losses, read_rows


def test_two_epoch_run_writes_every_artifact(phantom_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "2", *TINY]) == 0
    for name in ("config.yaml", "splits.json", "checkpoints/last.pt", "checkpoints/best.pt",
                 "metrics.csv", "curves.png", "model.json", "train.log", "train.json"):
        assert (run / name).is_file(), name
    rows = read_rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_dice"]) <= 1 and float(r["slices_per_s"]) > 0 for r in rows)
    assert all(0 <= float(r["data_share"]) <= 1 for r in rows)  # time waiting for batches
    summary = json.loads((run / "train.json").read_text())
    assert summary["slices_per_s"] > 0 and 0 <= summary["data_share"] <= 1
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine decay
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["base"] == 4 and cfg["train"]["epochs"] == 2  # fully resolved
    assert set(cfg) == {"data", "model", "augment", "optim", "train"}
    splits = json.loads((run / "splits.json").read_text())
    assert splits["scheme"] == "kfold" and splits["n_folds"] == 3 and splits["fold"] == 0
    assert not set(splits["train"]) & set(splits["val"] + splits["test"])
    assert "stratified_by" not in splits  # data.stratify is off by default
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "config", "model_name",
            "model_kwargs", "best_dice"} <= set(ck)
    assert ck["epoch"] == 1 and ck["config"]["data"]["slab"] == 1
    model, spec = load_model(run)
    assert spec.slab == 1 and spec.model_kwargs["in_channels"] == 2
    assert spec.pad_multiple == 16 and spec.windows["cta"] == [-20.0, 300.0]
    assert spec.modality_dropout == 0.4 and spec.trained_for_missing  # the default
    out = model(torch.zeros(1, 2, 48, 32))
    assert out.shape == (1, 1, 48, 32)
    printed = capsys.readouterr().out
    assert "best validation Dice" in printed and "post-processing chosen" in printed
    # post-processing tuned on validation: model.json holds the chosen pair, train.json
    # the whole table, and the chosen pair scores at least the configured one
    tuned = json.loads((run / "train.json").read_text())["postprocess"]
    assert (spec.threshold, spec.min_component_mm3) == (tuned["threshold"],
                                                        tuned["min_component_mm3"])
    assert len(tuned["table"]) >= 30 and tuned["val_dice"] >= tuned["configured_val_dice"]
    # ... with the validation patients keeping a speck at the chosen pair, as stated
    chosen = [r for r in tuned["table"] if (r["threshold"], r["min_component_mm3"])
              == (tuned["threshold"], tuned["min_component_mm3"])]
    assert tuned["n_patients"] == len(splits["val"])
    assert tuned["patients_with_speck"] == chosen[0]["patients_with_speck"]
    assert f"{tuned['patients_with_speck']} of {tuned['n_patients']} validation" in printed
    # the QC review threshold is chosen on validation too, stored as plain numbers, from
    # the very scores predict gives those cases (not the softer-edged training-grid maps)
    assert spec.qc["source"] == "validation" and 0 <= spec.qc["threshold"] <= 1
    assert spec.qc["fitted_on"]["cases"] >= 1 and "QC review threshold" in printed
    assert spec.qc["fitted_on"]["maps"] == "predict"
    val_scores = spec.qc["fitted_on"]["scores"]
    assert set(val_scores) == set(splits["val"])
    pred = tmp_path / "pred"
    assert main(["predict", str(run), str(phantom_cohort), str(pred), "--device", "cpu",
                 "--quiet"]) == 0
    given = json.loads((pred / "predict.json").read_text())["qc"]
    for case_id, score in val_scores.items():
        assert given[case_id]["qc_score"] == pytest.approx(score, abs=1e-3), case_id
    # ... and, trained with modality dropout, a threshold for the scores predict
    # --scan-support gives, chosen on the same cases with those scores
    support = spec.qc["scan_support"]
    assert 0 <= support["threshold"] <= 1
    assert support["fitted_on"]["maps"] == "predict, with scan support"
    assert main(["predict", str(run), str(phantom_cohort), str(tmp_path / "pred_s"),
                 "--device", "cpu", "--quiet", "--scan-support"]) == 0
    info = json.loads((tmp_path / "pred_s" / "predict.json").read_text())
    assert info["scan_support"] is True and info["qc_flag"]["threshold"] == support["threshold"]
    for case_id, score in support["fitted_on"]["scores"].items():
        assert info["qc"][case_id]["qc_score"] == pytest.approx(score, abs=1e-3), case_id
    best_in_table = max(r["val_dice"] for r in tuned["table"])
    if tuned["changed"]:
        assert tuned["val_dice"] == pytest.approx(best_in_table, abs=1e-5)
    else:
        assert (tuned["threshold"], tuned["min_component_mm3"]) == (0.5, 5.0)
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    assert not list((run / "cache").glob("val_prob_*"))  # the spilled maps are gone
    # a second train into the same folder without --resume is refused
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "2", *TINY]) == 1


#: Mining after every epoch, at a threshold the untrained tiny network reaches outside
#: the clot (at 0.5 it calls nothing, and the pool would stay empty).
MINED = ["--set", "data.mined_negative_fraction=0.25", "--set", "data.mine_every=1",
         "--set", "data.mine_cases=2", "--set", "train.threshold=0.2"]


@pytest.mark.parametrize("extra", [[], ["--set", "train.ema_decay=0.9"], MINED],
                         ids=["plain", "ema", "mined"])
def test_resume_equals_uninterrupted(phantom_cohort, tmp_path, monkeypatch, extra):
    from clotseg.training import trainer

    full, part = tmp_path / "full", tmp_path / "part"
    det = [*TINY, "--set", "train.deterministic=true", *extra]
    assert main(["train", str(phantom_cohort), "--out", str(full), "--epochs", "3", *det]) == 0
    # Kill the second run during epoch 3 (after epoch 2's checkpoint was written).
    real_validate, calls = trainer.validate, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(trainer, "validate", killed)
    assert main(["train", str(phantom_cohort), "--out", str(part), "--epochs", "3", *det]) == 130
    assert len(losses(part)) == 2
    monkeypatch.setattr(trainer, "validate", real_validate)
    assert main(["train", str(phantom_cohort), "--out", str(part), "--resume"]) == 0
    assert losses(part) == losses(full)  # same text in metrics.csv: bit-for-bit
    assert [r["lr"] for r in read_rows(part)] == [r["lr"] for r in read_rows(full)]
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    # with ema_decay, "model" is the average and "train_model" the trained weights
    for key in ("model", "train_model") if "ema_decay" in str(extra) else ("model",):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    if extra == MINED:  # the pool mined after epoch 2 came back with the checkpoint
        assert a["mined"].keys() == b["mined"].keys() and a["mined"]
        for k in a["mined"]:
            assert torch.equal(a["mined"][k], b["mined"][k])
        log = (part / "train.log").read_text()
        assert "mined negatives after epoch 2" in log and "after epoch 3" not in log
    elif extra:
        assert a["ema_steps"] == b["ema_steps"] == 9  # 3 epochs x 3 steps
    assert "resumed" in (part / "train.log").read_text()


def test_ema_weights_are_validated_saved_and_predicted_with(phantom_cohort, tmp_path,
                                                            monkeypatch):
    # train.ema_decay: validation, the checkpoints' "model" and predict all use the
    # moving average, while the trained weights travel beside it for --resume.
    from clotseg.training import trainer

    validated, real_validate = [], trainer.validate

    def spy(model, *args, **kwargs):
        validated.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_validate(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "validate", spy)
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "2", *TINY,
                 "--set", "train.ema_decay=0.99",
                 "--set", "train.tune_postprocess=false"]) == 0
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["ema_steps"] == 6
    weights = [k for k, v in ck["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(ck["model"][k], ck["train_model"][k]) for k in weights)
    assert all(torch.equal(validated[-1][k], ck["model"][k]) for k in ck["model"])
    model, _ = load_model(run)  # best.pt's average, as predict loads it
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], best["model"][k]) for k in weights)
    assert "train_model" in best


def test_time_limit_stops_cleanly_with_a_checkpoint(phantom_cohort, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--set", "train.steps_per_epoch=100000"]
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "50",
                 "--time-limit", "0.1", *args]) == 0
    info = json.loads((run / "train.json").read_text())
    assert info["stopped"] == "time-limit" and info["epochs_done"] == 1
    assert len(read_rows(run)) == 1 and (run / "checkpoints" / "last.pt").is_file()
    # time-fitted schedule: the learning rate has been annealed by the end of the budget
    assert float(read_rows(run)[0]["lr"]) < 0.5 * 3e-3


@pytest.mark.parametrize("patience_from, epochs_done", [(0.0, 3), (0.8, 9)])
def test_early_stopping_waits_for_the_schedule(phantom_cohort, tmp_path, monkeypatch,
                                               patience_from, epochs_done):
    """A lucky first validation must not end a run while the learning rate is still high:
    epochs without improvement count only from train.patience_from of the schedule."""
    scores = iter([0.5] + [0.1] * 20)
    monkeypatch.setattr("clotseg.training.trainer.validate", lambda *a, **k: next(scores))
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "10", *TINY,
                 "--set", "train.patience=2", "--set", f"train.patience_from={patience_from}",
                 "--set", "train.tune_postprocess=false"]) == 0
    info = json.loads((run / "train.json").read_text())
    # 0.0: epochs 2 and 3 are the two bad ones; 0.8: counting starts at epoch 8 (80 % of
    # the 10 planned epochs' steps), so epochs 8 and 9 are
    assert info["stopped"] == "early-stopping" and info["epochs_done"] == epochs_done
    assert info["best_epoch"] == 1


def test_user_errors_exit_1_with_one_line(phantom_cohort, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", str(phantom_cohort), "--out", out, "--set", "train.epoch=3"]) == 1
    assert "valid keys" in capsys.readouterr().err
    assert main(["train", str(phantom_cohort), "--out", out, "--set", "data.slab=4"]) == 1
    assert "odd" in capsys.readouterr().err
    assert main(["train", str(phantom_cohort), "--out", out, "--preset", "original",
                 "--fold", "1"]) == 1
    assert "kfold" in capsys.readouterr().err
    assert main(["train", str(phantom_cohort), "--out", out, "--set", "model.name=nope"]) == 1
    assert "available" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing"), "--out", out]) == 1
    assert main(["train", str(phantom_cohort), "--out", out, "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_reuse_splits_file(phantom_cohort, tmp_path):
    a = tmp_path / "a"
    assert main(["train", str(phantom_cohort), "--out", str(a), "--epochs", "1", *TINY]) == 0
    b = tmp_path / "b"
    assert main(["train", str(phantom_cohort), "--out", str(b), "--epochs", "1", *TINY,
                 "--set", f"data.splits={a / 'splits.json'}", "--set", "data.split_seed=5"]) == 0
    assert (a / "splits.json").read_text() == (b / "splits.json").read_text()


@pytest.mark.parametrize("name", ["fusion-unet", "monai-unet"])
def test_other_models_train_and_reload(phantom_cohort, tmp_path, name):
    run = tmp_path / name
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", f"model.name={name}", "--set", "data.slab=3"]) == 0
    model, spec = load_model(run)
    assert spec.model_name == name and spec.model_kwargs["in_channels"] == 6


def test_qc_threshold_falls_back_to_training_grid_scores_when_predicting_fails(
        phantom_cohort, tmp_path, monkeypatch):
    # A failure while predicting the validation cases for the QC threshold must not lose
    # the run: the threshold comes from the training-grid scores and the log says why.
    from clotseg.errors import ClotsegError
    from clotseg.training.trainer import Trainer

    def fail(self):
        raise ClotsegError("synth_000: cannot read")

    monkeypatch.setattr(Trainer, "_predicted_validation", fail)
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1",
                 *TINY]) == 0
    qc = load_model_spec(run).qc
    assert qc["source"] == "validation" and qc["fitted_on"]["maps"] == "training grid"
    assert "scores" not in qc["fitted_on"]
    assert "synth_000: cannot read" in (run / "train.log").read_text()


def test_original_preset_pads_to_256(phantom_cohort, tmp_path):
    run = tmp_path / "orig"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--preset", "original",
                 "--epochs", "1", "--set", "model.base=4", "--set", "train.batch_size=2",
                 "--set", "train.steps_per_epoch=2", "--set", "train.threads=1"]) == 0
    spec = load_model_spec(run)
    assert spec.slab == 1 and spec.pad_multiple == 256
    assert "canvas (256, 256)" in (run / "train.log").read_text()
    splits = json.loads((run / "splits.json").read_text())
    assert splits["scheme"] == "random" and splits["seed"] == 1
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (4, 2, 2)


def test_torchrun_two_processes_gloo(phantom_cohort, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "clotseg.cli",
           "train", str(phantom_cohort), "--out", str(run), "--epochs", "1", "--device", "cpu",
           *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best validation Dice") == 1  # one summary, from rank 0
    rows = read_rows(run)
    assert len(rows) == 1 and np.isfinite(float(rows[0]["train_loss"]))
    assert (run / "checkpoints" / "best.pt").is_file()
    assert load_model_spec(run).model_name == "unet-original"
    info = json.loads((run / "train.json").read_text())
    assert info["world_size"] == 2
    assert not [p.name for p in run.rglob("*") if ".tmp" in p.name]
    load_model(run)


def test_preprocess_train_predict_on_the_raw_scans(phantom_cohort, tmp_path):
    """preprocess → train → predict on the original scans: model.json carries the
    preprocessing, predict repeats it and writes each mask on the original CTA grid."""
    from clotseg.io.ongrid import file_grid

    prep, run, out = tmp_path / "prep", tmp_path / "run", tmp_path / "pred"
    assert main(["preprocess", str(phantom_cohort), str(prep), "--no-register", "--target-spacing",
                 "0.8", "0.8", "1.0", "--no-progress"]) == 0
    assert main(["train", str(prep), "--out", str(run), "--epochs", "1", *TINY]) == 0
    spec = load_model_spec(run)
    assert spec.preprocess.spacing == (0.8, 0.8, 1.0) and spec.preprocess.roi == "auto"
    assert spec.preprocess.register is False
    case = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0]
    assert main(["predict", str(run), str(case), str(out)]) == 0
    written = out / f"{case.name}.nii.gz"
    assert file_grid(written).same_as(file_grid(case / "cta.nii.gz"))


def test_target_spacing_applies_on_top_of_a_preprocessed_dataset(phantom_cohort, tmp_path):
    """A dataset preprocessed at each scan's own spacing still gets one voxel size: the
    cache resamples the (registered, cropped) cases to the median spacing and model.json
    makes predict register, crop and resample to it; a spacing chosen at preprocess wins."""
    from clotseg.data.spacing import median_spacing, model_preprocessing
    from clotseg.io.layouts import discover
    from clotseg.preprocess.pipeline import PreprocessSettings

    cases = discover(phantom_cohort).cases
    (tmp_path / "preprocess.json").write_text(json.dumps(
        {"settings": PreprocessSettings(register=True, roi="auto").to_dict()}))
    settings, resample = model_preprocessing(tmp_path, "auto", cases)
    assert settings.register is True and settings.roi == "auto"
    assert settings.spacing == median_spacing(cases)
    assert resample["register"] is False and resample["roi"] == "none"  # done already
    assert tuple(resample["spacing"]) == settings.spacing
    settings, resample = model_preprocessing(tmp_path, "none", cases)
    assert settings.spacing is None and resample is None
    (tmp_path / "preprocess.json").write_text(json.dumps(
        {"settings": PreprocessSettings(register=True, spacing=(0.8, 0.8, 1.0)).to_dict()}))
    settings, resample = model_preprocessing(tmp_path, [0.5, 0.5, 0.5], cases)
    assert settings.spacing == (0.8, 0.8, 1.0) and resample is None


def test_roi_auto_crops_the_cache_and_predict_repeats_it(phantom_cohort, tmp_path):
    """data.roi=auto on raw scans: the cached cases are the Circle-of-Willis box (not the
    whole volume), model.json makes predict crop the same box without registering, and
    the mask comes back on the whole CTA grid."""
    from clotseg.data.spacing import median_spacing
    from clotseg.io.layouts import discover
    from clotseg.io.ongrid import file_grid

    run, out = tmp_path / "run", tmp_path / "pred"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "data.roi=auto", "--set", "data.roi_size_mm=40",
                 "--set", "train.tune_postprocess=false"]) == 0
    spec = load_model_spec(run)
    assert (spec.preprocess.roi, spec.preprocess.roi_size_mm) == ("auto", 40.0)
    assert spec.preprocess.register is False
    train_ids = json.loads((run / "splits.json").read_text())["train"]
    sp = median_spacing(discover(phantom_cohort).subset(train_ids).cases)
    assert spec.preprocess.spacing == sp
    images = sorted((run / "cache").glob("*.image.npy"))
    assert images
    for f in images:  # slice-major (Z, 2, X, Y): the 40 mm box on every axis (its corners
        z, _, x, y = np.load(f, mmap_mode="r").shape  # are rounded to whole voxels of the
        mm = np.array([x, y, z]) * np.asarray(sp)  # scan, then of the resampled grid)
        assert np.all(np.abs(mm - 40.0) < 3.0), (f.name, mm)
    for case in discover(phantom_cohort).cases:  # the whole volumes are ~60 mm in-plane
        grid = file_grid(case.cta)
        assert (np.asarray(grid.shape) * np.asarray(grid.spacing) > 55.0).sum() >= 2
    case = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0]
    assert main(["predict", str(run), str(case), str(out)]) == 0
    assert file_grid(out / f"{case.name}.nii.gz").same_as(file_grid(case / "cta.nii.gz"))


def test_roi_that_cuts_a_training_clot_is_a_warning_naming_the_case(phantom_cohort,
                                                                   tmp_path):
    from clotseg.config import default_windows
    from clotseg.data.cache import cache_case
    from clotseg.data.spacing import resample_settings
    from clotseg.io.layouts import discover

    cases = discover(phantom_cohort).cases
    settings = resample_settings("none", cases, "auto", 20.0)
    assert settings["spacing"] is None and settings["roi"] == "auto"
    cut = []
    for case in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            entry = cache_case(case, tmp_path / "cache", default_windows(), settings)
        total = int(np.count_nonzero(case.read("mask").array))
        kept = int(np.count_nonzero(entry.mask_slices))
        messages = [str(w.message) for w in caught if "ROI cuts the clot" in str(w.message)]
        if kept < total:  # a clot voxel outside the box: said, with the case and the counts
            assert len(messages) == 1 and messages[0].startswith(f"case {case.case_id}:")
            assert f"{total - kept} of {total} clot voxels" in messages[0]
            assert "data.roi_size_mm" in messages[0]
            cut.append(case.case_id)
        else:
            assert not messages
    assert cut  # a 20 mm box cuts some of the phantom's clots


def test_data_roi_is_refused_on_a_preprocessed_dataset(phantom_cohort, tmp_path):
    from clotseg.data.spacing import model_preprocessing
    from clotseg.errors import ConfigError
    from clotseg.io.layouts import discover
    from clotseg.preprocess.pipeline import PreprocessSettings

    cases = discover(phantom_cohort).cases
    settings, resample = model_preprocessing(phantom_cohort, "none", cases, "auto", 90.0)
    assert resample == PreprocessSettings(register=False, roi="auto",
                                          roi_size_mm=90.0).to_dict()
    assert settings == PreprocessSettings.from_dict(resample)
    (tmp_path / "preprocess.json").write_text(json.dumps(
        {"settings": PreprocessSettings(register=True, roi="none").to_dict()}))
    with pytest.raises(ConfigError, match="preprocess --roi"):
        model_preprocessing(tmp_path, "auto", cases, "auto")


def test_mask_roi_is_not_repeated_at_inference(tmp_path):
    """Crops around the reference clot cannot be made without a mask: predict keeps the
    registration and spacing and uses the whole volume."""
    from clotseg.errors import ClotsegError
    from clotseg.preprocess.pipeline import PreprocessSettings, inference_settings_of

    assert inference_settings_of(tmp_path) is None  # not a preprocessed dataset
    settings = PreprocessSettings(register=True, spacing=(1.0, 1.0, 1.0), roi="mask")
    (tmp_path / "preprocess.json").write_text(json.dumps({"settings": settings.to_dict()}))
    got = inference_settings_of(tmp_path)
    assert got.roi == "none" and got.register is True and got.spacing == (1, 1, 1)
    (tmp_path / "preprocess.json").write_text("{not json")
    with pytest.raises(ClotsegError, match="preprocess.json"):
        inference_settings_of(tmp_path)


def test_modality_dropout_trains_and_is_recorded(phantom_cohort, tmp_path):
    # Real steps with half the samples missing a modality; model.json records it so that
    # predict knows the model has seen missing inputs.
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "train.modality_dropout=0.5",
                 "--set", "train.tune_postprocess=false"]) == 0
    assert np.isfinite(losses(run)).all()
    spec = load_model_spec(run)
    assert spec.modality_dropout == 0.5
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["modality_dropout"] == 0.5


def test_slice_axis_augmentations_train_with_the_ncct_in_hu_cached(phantom_cohort, tmp_path):
    # Real steps with every sample's NCCT made thick, blurred across slices and its clot
    # isodense: the
    # trainer caches each training case's NCCT in HU (not the validation cases': never
    # augmented), and the settings are recorded with the run.
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "data.slab=3", "--set", "augment.thick_ncct_prob=1",
                 "--set", "augment.z_blur_prob=1", "--set", "augment.isodense_prob=1",
                 "--set", "train.tune_postprocess=false"]) == 0
    assert np.isfinite(losses(run)).all()
    splits = json.loads((run / "splits.json").read_text())
    cached = {p.name.split(".")[0] for p in (run / "cache").glob("*.ncct_hu.npy")}
    assert cached == set(splits["train"])
    aug = yaml.safe_load((run / "config.yaml").read_text())["augment"]
    assert aug["thick_ncct_prob"] == 1 and aug["z_blur_prob"] == 1 and aug["isodense_prob"] == 1


def test_views_train_on_re_sliced_cases_and_predict_averages_them(phantom_cohort, tmp_path):
    # Real steps on axial and sagittal slices; predict averages both views (model.json),
    # which changes the probabilities against the same weights predicted axially only.
    import shutil

    import SimpleITK as sitk

    from clotseg.io.ongrid import file_grid

    run, out = tmp_path / "run", tmp_path / "pred"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "data.views=[axial, sagittal]",
                 "--set", "train.tune_postprocess=false"]) == 0
    assert np.isfinite(losses(run)).all()
    assert load_model_spec(run).views == ["axial", "sagittal"]
    splits = json.loads((run / "splits.json").read_text())
    cached = {p.name for p in (run / "cache").iterdir()}
    assert all(f"{c}.sagittal.image.npy" in cached for c in splits["train"])
    assert not any(f"{c}.sagittal.image.npy" in cached for c in splits["val"])
    axial_run = tmp_path / "axial_run"
    shutil.copytree(run, axial_run, ignore=shutil.ignore_patterns("cache"))
    spec = json.loads((axial_run / "model.json").read_text())
    (axial_run / "model.json").write_text(json.dumps({**spec, "views": ["axial"]}))
    case = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0]
    probs = []
    for r, o in ((run, out), (axial_run, tmp_path / "pred_axial")):
        assert main(["predict", str(r), str(case), str(o), "--save-prob", "-q"]) == 0
        assert file_grid(o / f"{case.name}.nii.gz").same_as(file_grid(case / "cta.nii.gz"))
        probs.append(sitk.GetArrayFromImage(sitk.ReadImage(str(o / f"{case.name}_prob.nii.gz"))))
    assert np.abs(probs[0] - probs[1]).max() > 1e-3


def test_mirrored_model_trains_on_crops_and_predicts_on_the_cta_grid(phantom_cohort, tmp_path):
    # Real steps on crops of whole slices mirrored left to right (model.mirror); the run
    # reloads as the mirrored model and predict writes a mask on the CTA's own grid.
    from clotseg.io.ongrid import file_grid
    from clotseg.models.mirror import MirrorInput

    run, out = tmp_path / "run", tmp_path / "pred"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "model.mirror=true", "--set", "train.tune_postprocess=false"]) == 0
    assert np.isfinite(losses(run)).all()
    assert load_model_spec(run).model_kwargs["mirror"] is True
    model, _ = load_model(run)
    assert isinstance(model, MirrorInput)
    case = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0]
    assert main(["predict", str(run), str(case), str(out), "-q"]) == 0
    assert file_grid(out / f"{case.name}.nii.gz").same_as(file_grid(case / "cta.nii.gz"))


def test_average_last_predicts_with_the_mean_of_best_and_last_weights(phantom_cohort,
                                                                       tmp_path, monkeypatch):
    # Validation best at epoch 1 of 3: best.pt's model becomes the mean of epoch 1's and
    # epoch 3's weights (the best ones kept beside it), and predict loads that mean.
    scores = iter([0.5, 0.2, 0.1])
    monkeypatch.setattr("clotseg.training.trainer.validate", lambda *a, **k: next(scores))
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "3", *TINY,
                 "--set", "train.average_last=true",
                 "--set", "train.tune_postprocess=false"]) == 0
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 0 and last["epoch"] == 2 and best["averaged_with_epoch"] == 2
    floats = [k for k, v in best["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(best["best_model"][k], last["model"][k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(best["model"][k],
                                   (best["best_model"][k] + last["model"][k]) / 2)
    model = load_model(run)
    model = model[0] if isinstance(model, tuple) else model
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best["model"][k])
    assert "averaged with the last ones" in (run / "train.log").read_text()


@pytest.mark.parametrize("precision, expected", [("auto", torch.float32),
                                                 ("fp32", torch.float32),
                                                 ("bf16", torch.bfloat16)])
def test_training_steps_run_in_the_precision_asked_for(precision, expected):
    """``train.precision``: bf16 autocast for the CPU steps only when asked (the default
    stays fp32 there); the weights and their update stay fp32 either way."""
    from clotseg.config import Config, set_value
    from clotseg.models import create_model
    from clotseg.training.losses import make_loss
    from clotseg.training.trainer import train_step

    cfg = Config()
    set_value(cfg, "train.precision", precision)
    torch.manual_seed(0)
    model = create_model("unet-original", in_channels=2, base=4)
    seen = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(4, 2, 32, 32)
    y = (torch.rand(4, 1, 32, 32) > 0.9).float()
    loss = train_step(model, model, x, y, optim, make_loss(cfg.train.loss), cfg,
                      torch.device("cpu"))
    assert seen == [expected] and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_deep_supervision_loss_weighs_every_head_and_trains_them():
    """The heads' losses are weighted 1, 1/2, 1/4 ... normalised to sum 1 (so identical
    heads give exactly one head's loss), and one real step of a deeply supervised 3D
    network moves the coarse heads' weights as well as the main output's."""
    from clotseg.config import Config, set_value
    from clotseg.models import create_model
    from clotseg.training.losses import deep_supervision_loss, make_loss
    from clotseg.training.trainer import train_step

    loss_fn = make_loss("dice_bce")
    torch.manual_seed(5)
    y = (torch.rand(2, 5, 16, 16) > 0.8).float()
    one = torch.randn(2, 5, 16, 16)
    other = torch.randn(2, 5, 16, 16)
    single = loss_fn(one.unsqueeze(1), y.unsqueeze(1))
    torch.testing.assert_close(deep_supervision_loss(loss_fn, torch.stack([one] * 3, 1), y),
                               single)
    mixed = deep_supervision_loss(loss_fn, torch.stack([one, other], 1), y)
    torch.testing.assert_close(
        mixed, (2 * single + loss_fn(other.unsqueeze(1), y.unsqueeze(1))) / 3)

    cfg = Config()
    set_value(cfg, "model.name", "monai-dynunet-3d")
    model = create_model("monai-dynunet-3d", in_channels=10, base=4, deep_supervision=1)
    heads = model.net.deep_supervision_heads
    before = [p.detach().clone() for p in heads.parameters()]
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(2, 10, 32, 32), (torch.rand(2, 5, 32, 32) > 0.9).float()
    loss = train_step(model, model.train(), x, y, optim, loss_fn, cfg, torch.device("cpu"))
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, heads.parameters(), strict=True))


def test_bf16_training_run_is_logged_and_checked(phantom_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "train.precision=bf16", "--set", "train.tune_postprocess=false"]) == 0
    assert np.isfinite(losses(run)).all()
    assert "steps in bf16" in (run / "train.log").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"] == "bf16"
    capsys.readouterr()
    assert main(["train", str(phantom_cohort), "--out", str(tmp_path / "bad"), "--epochs", "1",
                 *TINY, "--set", "train.precision=fp16"]) == 1
    err = capsys.readouterr().err
    assert "train.precision" in err and "Traceback" not in err


def test_a_run_with_cta_projections_and_a_stratified_split(phantom_cohort, tmp_path,
                                                           monkeypatch):
    """Both options on (one run for two): the split is stratified from the masks on disk,
    and predict builds the projections the model was trained with."""
    from clotseg.data import slabs

    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "data.slab=3", "--set", "data.cta_mip=3",
                 "--set", "data.stratify=true"]) == 0
    splits = json.loads((run / "splits.json").read_text())
    with (phantom_cohort / "truth.csv").open() as f:
        free = {r["case_id"] for r in csv.DictReader(f) if r["has_clot"] == "False"}
    assert splits["stratified_by"] == {"clot": 8 - len(free), "clot-free": len(free)}
    assert free & set(splits["val"])  # the rarest group is dealt first: fold 0 gets one
    spec = load_model_spec(run)
    assert (spec.slab, spec.cta_mip) == (3, 3)
    windows = []
    real = slabs.cta_projections
    monkeypatch.setattr(slabs, "cta_projections",
                        lambda w, s: windows.append((w.shape[1], s)) or real(w, s))
    pred = tmp_path / "pred"
    assert main(["predict", str(run), str(phantom_cohort), str(pred), "--device", "cpu",
                 "--quiet"]) == 0
    assert windows and set(windows) == {(7, 3)}  # 3 slices either side, slab 3
    assert len(list(pred.glob("synth_*.nii.gz"))) == 8


def test_retune_chooses_the_post_processing_again_without_training(phantom_cohort, tmp_path):
    from clotseg.errors import ClotsegError
    from clotseg.inference.fp_filter import FEATURES
    from clotseg.training.trainer import retune

    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "2", *TINY]) == 0
    before = json.loads((run / "model.json").read_text())
    weights = (run / "checkpoints" / "best.pt").read_bytes()
    retune(run)  # the run's own settings: the same choices again
    after = json.loads((run / "model.json").read_text())
    for key in ("threshold", "min_component_mm3", "grow_threshold", "component_filter"):
        assert after[key] == before[key], key
    assert after["qc"]["threshold"] == before["qc"]["threshold"]
    assert (run / "checkpoints" / "best.pt").read_bytes() == weights  # no training
    assert "tuning the post-processing again" in (run / "train.log").read_text()
    # with the filter asked for: it is fitted on the scans too, or the log says why not
    retune(run, settings=["train.fp_filter=true"])
    spec = json.loads((run / "model.json").read_text())
    summary = json.loads((run / "train.json").read_text())
    assert summary["component_filter"] == spec["component_filter"]
    if spec["component_filter"] is None:
        assert "false-positive filter: " in (run / "train.log").read_text()
    else:
        assert spec["component_filter"]["features"] == FEATURES
    assert main(["predict", str(run), str(phantom_cohort), str(tmp_path / "pred"),
                 "--quiet"]) == 0
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 8
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.json").write_text((run / "model.json").read_text())
    with pytest.raises(ClotsegError, match="not a finished training run"):
        retune(tmp_path / "half")
    with pytest.raises(ClotsegError, match="tune_postprocess is false"):
        retune(run, settings=["train.tune_postprocess=false"])


@pytest.mark.parametrize("heads", [0, 1])
def test_volumetric_model_trains_on_blocks_and_predicts_on_the_cta_grid(phantom_cohort,
                                                                          tmp_path, heads):
    # Real steps of the 3D network on 5-slice blocks (every slice's mask is its target),
    # with and without a deep-supervision head; the run reloads as the 3D network (with
    # its head's weights), and predict, sliding the block along the slices, writes a mask
    # on the CTA's own grid.
    from clotseg.io.ongrid import file_grid
    from clotseg.models.volumetric import VolumetricUNet

    run, out = tmp_path / "run", tmp_path / "pred"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "1", *TINY,
                 "--set", "model.name=monai-dynunet-3d", "--set", "data.slab=5",
                 "--set", f"model.deep_supervision={heads}",
                 "--set", "train.tune_postprocess=false"]) == 0
    assert np.isfinite(losses(run)).all()
    spec = load_model_spec(run)
    assert spec.model_name == "monai-dynunet-3d" and spec.slab == 5
    assert spec.model_kwargs.get("deep_supervision", 0) == heads
    model, _ = load_model(run)
    assert isinstance(model, VolumetricUNet) and model.slices == 5
    assert model.net.deep_supervision is bool(heads)
    case = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0]
    assert main(["predict", str(run), str(case), str(out), "-q"]) == 0
    assert file_grid(out / f"{case.name}.nii.gz").same_as(file_grid(case / "cta.nii.gz"))
