"""A short real training on phantom cases must learn: clearly non-trivial 3D validation
Dice, and the best checkpoint reproduces it through the predict path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.runs import load_model
from tests.training.conftest import read_rows

LEARN = ["--set", "model.base=8", "--set", "data.patch=32", "--set", "train.batch_size=16",
         "--set", "train.steps_per_epoch=40", "--set", "data.clot_fraction=0.7",
         "--set", "data.scheme=random", "--set", "data.val_fraction=0.3",
         "--set", "train.threads=1", "--set", "optim.lr=0.004",
         # the wide domain-randomisation ranges slow down a 5-minute run on 5 cases; this
         # test is about learning at all, the augmentations have their own tests
         "--set", "augment.noise_hu=0", "--set", "augment.lowres_prob=0",
         "--set", "augment.hu_shift=0", "--set", "augment.contrast=0.15",
         # isodense clots (a quarter of the samples by default) teach the CTA path and
         # slow the first epochs: max validation Dice 0.24 after 8 epochs with them
         "--set", "augment.isodense_prob=0"]


@pytest.mark.slow
def test_short_training_learns_the_phantom(learn_cohort, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(learn_cohort), "--out", str(run), "--epochs", "8", *LEARN]) == 0
    dice = [float(r["val_dice"]) for r in read_rows(run)]
    assert max(dice) > 0.3, dice
    info = json.loads((run / "train.json").read_text())
    assert info["best_val_dice"] == pytest.approx(max(dice))
    # the best checkpoint, rebuilt from the run folder alone, gives the same validation Dice
    from clotseg.config import load_yaml
    from clotseg.data.cache import build_cache
    from clotseg.io.layouts import discover
    from clotseg.training.distributed import DistInfo
    from clotseg.training.trainer import validate

    cfg = load_yaml(run / "config.yaml")
    splits = json.loads((run / "splits.json").read_text())
    model, spec = load_model(run)
    assert spec.preprocess and spec.preprocess.spacing  # one voxel size, as trained
    cases = build_cache(discover(learn_cohort).subset(splits["val"]).cases, run / "cache",
                        cfg.data.windows, progress=False, resample=spec.preprocess)
    assert validate(model, cases, cfg, "cpu", DistInfo()) == pytest.approx(max(dice), abs=1e-6)
    assert np.isfinite([float(r["train_loss"]) for r in read_rows(run)]).all()
