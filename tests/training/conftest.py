"""Fixtures and settings shared by the training tests (tiny models, few steps)."""

from __future__ import annotations

import csv

import pytest

#: A tiny, fast configuration: 4-channel-wide U-Net, 3 batches of 4 32-pixel crops.
TINY = ["--set", "model.base=4", "--set", "train.steps_per_epoch=3", "--set",
        "train.batch_size=4", "--set", "data.patch=32", "--set", "data.slab=1",
        "--set", "data.n_folds=3", "--set", "train.threads=1"]


def read_rows(run) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def losses(run) -> list[float]:
    return [float(r["train_loss"]) for r in read_rows(run)]


@pytest.fixture(scope="session")
def learn_cohort(tmp_path_factory):
    """Ten small phantom cases for the learning test."""
    from clotseg.synth import write_cohort

    root = tmp_path_factory.mktemp("learn")
    write_cohort(root, 10, seed=11, size="small", progress=False)
    return root
