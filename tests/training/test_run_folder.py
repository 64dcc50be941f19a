"""``runs.Run``: each file of a RUN folder written and read back through its typed methods,
and a ``train.json`` from an older version still read."""

from __future__ import annotations

import json

import pytest
import torch

from clotseg.config import Config, set_value
from clotseg.errors import ClotsegError
from clotseg.runs import ModelSpec, Run, TrainSummary, checkpoint_path, load_model_spec


def test_config_splits_spec_round_trip(tmp_path):
    run = Run(tmp_path / "run")
    run.path.mkdir()
    assert run.read_config() is None and run.read_splits() is None
    cfg = Config()
    set_value(cfg, "train.epochs", 7)
    set_value(cfg, "model.base", 8)
    run.write_config(cfg)
    back = run.read_config()
    assert isinstance(back, Config) and back.to_dict() == cfg.to_dict()
    splits = {"scheme": "kfold", "seed": 0, "n_folds": 3, "fold": 1,
              "train": ["a", "b"], "val": ["c"], "test": ["d"]}
    run.write_splits(splits)
    assert run.read_splits(["a", "b", "c", "d"]) == splits
    with pytest.raises(ClotsegError, match="not in the dataset"):
        run.read_splits(["a"])
    spec = ModelSpec("unet-original", {"in_channels": 2, "base": 4}, threshold=0.4)
    text = spec.to_json()
    run.write_spec(spec)
    assert run.spec_path.read_text() == text  # the JSON format is unchanged
    assert run.read_spec() == spec == load_model_spec(run.path)


def test_lenient_config_ignores_unknown_keys(tmp_path):
    run = Run(tmp_path)
    run.config_path.write_text("train:\n  epochs: 3\n  retired_key: 1\nold_section: {a: 1}\n")
    with pytest.raises(ClotsegError, match="retired_key"):
        run.read_config()
    assert run.read_config(lenient=True).train.epochs == 3


def test_summary_and_metrics_round_trip(tmp_path):
    run = Run(tmp_path)
    assert run.read_summary() is None and run.read_metrics() == []
    summary = TrainSummary(best_val_dice=0.61, best_epoch=4, epochs_done=5, seconds=12.5,
                           stopped="epochs", device="cpu", world_size=1, batches="stream",
                           slices_per_s=80.25, data_share=0.1, n_train=6, n_val=2, n_test=2,
                           data="/data", postprocess={"threshold": 0.4}, component_filter=None)
    run.write_summary(summary)
    assert run.read_summary() == summary
    assert list(json.loads(run.summary_path.read_text())) == [
        "best_val_dice", "best_epoch", "epochs_done", "seconds", "stopped", "device",
        "world_size", "batches", "slices_per_s", "data_share", "n_train", "n_val", "n_test",
        "data", "postprocess", "component_filter"]  # the keys train.json always had
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_dice": 0.1 * e, "lr": 1e-3,
             "seconds": 2.0, "slices_per_s": 50.0, "data_share": 0.2, "best": e == 2}
            for e in (1, 2)]
    run.write_metrics(rows)
    assert run.read_metrics() == rows


def test_old_train_json_still_reads(tmp_path):
    run = Run(tmp_path)
    run.summary_path.write_text(json.dumps({
        "best_val_dice": 0.5, "best_epoch": 5, "epochs_done": 5, "seconds": 187.0,
        "stopped": "epochs", "device": "cpu", "world_size": 1, "data": "/d",
        "a_key_from_elsewhere": True}))
    got = run.read_summary()
    assert (got.best_epoch, got.seconds, got.device) == (5, 187.0, "cpu")
    assert got.slices_per_s is None and got.postprocess is None
    run.summary_path.write_text("{broken")
    with pytest.raises(ClotsegError, match="cannot read JSON"):
        run.read_summary()


def test_checkpoints_fall_back_and_load_safely(tmp_path):
    run = Run(tmp_path)
    with pytest.raises(ClotsegError, match="checkpoint missing"):
        run.checkpoint("best")
    run.write_checkpoint("last", {"model": {"w": torch.ones(2)}, "epoch": 3})
    assert run.checkpoint("best") == run.checkpoint_file("last") == checkpoint_path(tmp_path)
    assert run.load_checkpoint("best")["epoch"] == 3
    run.checkpoint_file("best").write_bytes(b"not a checkpoint")
    with pytest.raises(ClotsegError, match="cannot load checkpoint"):
        run.load_checkpoint("best")
    torch.save({"weights": 1}, run.checkpoint_file("best"))
    with pytest.raises(ClotsegError, match="not a clotseg checkpoint"):
        run.load_checkpoint("best")


def test_spec_qc_threshold_round_trips_and_old_spec_reads(tmp_path):
    """``model.json``'s ``qc`` (the review threshold chosen on validation) is kept as plain
    numbers; a file from before QC existed reads as ``qc=None`` (predict's default)."""
    run = Run(tmp_path)
    qc = {"threshold": 0.62, "source": "validation", "fitted_on": {"cases": 5, "bad": 1}}
    spec = ModelSpec("unet-original", {"in_channels": 2, "base": 4}, qc=qc)
    run.write_spec(spec)
    assert json.loads(run.spec_path.read_text())["qc"] == qc
    assert run.read_spec() == spec
    old = json.loads(run.spec_path.read_text())
    del old["qc"]
    run.spec_path.write_text(json.dumps(old))
    assert run.read_spec().qc is None
    for bad in ({"threshold": "0.6"}, {"threshold": 2}, "0.6"):
        with pytest.raises(ValueError, match="'qc'"):
            ModelSpec.from_dict({**old, "qc": bad})


def test_spec_windows_are_kept_and_a_spec_without_them_reads_as_the_old_default(tmp_path):
    """A run keeps the HU windows it was trained with whatever today's default; a
    ``model.json`` without ``windows`` was written when −100..700 HU was the CTA default,
    so it must not be fed today's narrower window."""
    from clotseg.config import DEFAULT_WINDOWS, LEGACY_WINDOWS

    run = Run(tmp_path)
    spec = ModelSpec("unet-original", {"in_channels": 2, "base": 4})
    assert spec.windows["cta"] == list(DEFAULT_WINDOWS["cta"])
    run.write_spec(spec)
    assert run.read_spec().windows == spec.windows
    old = json.loads(run.spec_path.read_text())
    del old["windows"]
    run.spec_path.write_text(json.dumps(old))
    assert run.read_spec().windows == {k: list(w) for k, w in LEGACY_WINDOWS.items()}
    assert LEGACY_WINDOWS["cta"] != DEFAULT_WINDOWS["cta"]  # the fallback is not a no-op
