"""Splits, slabs, the cache and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clotseg.config import AugmentConfig
from clotseg.data.augment import augment_batch
from clotseg.data.slabs import pad_to_multiple, slab
from clotseg.data.splits import load_splits, make_splits, save_splits
from clotseg.errors import ClotsegError

IDS = [f"p{i:02d}" for i in range(23)]


@pytest.mark.parametrize("fold", range(5))
def test_kfold_splits_are_patient_level_and_deterministic(fold):
    s = make_splits(IDS, scheme="kfold", n_folds=5, fold=fold, seed=3)
    sets = [set(s[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set.union(*sets) == set(IDS)
    assert s == make_splits(IDS, scheme="kfold", n_folds=5, fold=fold, seed=3)
    assert s["test"] == make_splits(IDS, scheme="kfold", n_folds=5, fold=0, seed=3)["test"]


def test_folds_cover_every_non_test_case_once():
    vals = [v for k in range(5) for v in make_splits(IDS, n_folds=5, fold=k)["val"]]
    test = make_splits(IDS)["test"]
    assert sorted(vals) == sorted(set(IDS) - set(test))


def test_random_split_60_20_20(tmp_path):
    s = make_splits([f"CS{i}" for i in range(1, 21)], scheme="random", seed=1)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (12, 4, 4)
    save_splits(tmp_path / "s.json", s)
    assert load_splits(tmp_path / "s.json") == s
    bad = dict(s, val=s["val"] + [s["train"][0]])
    save_splits(tmp_path / "bad.json", bad)
    with pytest.raises(ClotsegError, match="more than one split"):
        load_splits(tmp_path / "bad.json")


def test_slab_channel_order_and_edges():
    img = np.zeros((2, 4, 5, 6), np.float32)
    img[0] = np.arange(6)  # CTA value = slice index
    img[1] = 10 + np.arange(6)
    s = slab(img, 0, 3)
    assert s.shape == (6, 4, 5)
    assert [float(c[0, 0]) for c in s] == [0, 0, 1, 10, 10, 11]  # edge slice repeated


def test_padding_is_zero_not_garbage():
    x = np.ones((3, 37, 45), np.float32)
    p, crop = pad_to_multiple(x, 16)
    assert p.shape == (3, 48, 48)
    assert p.sum() == x.sum()
    np.testing.assert_array_equal(p[:, crop[0], crop[1]], x)


def test_augmentation_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    x = torch.zeros(8, 6, 64, 64)
    y = torch.zeros(8, 1, 64, 64)
    x[:, :, 20:34, 12:30] = 1.0  # a bright rectangle, off-centre, in every channel
    y[:, :, 20:34, 12:30] = 1.0
    cfg = AugmentConfig(spatial_prob=1.0, flip=0.5, intensity_prob=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(ya, y)  # something moved
    for b in range(8):
        bright = xa[b].mean(0) > 0.5
        m = ya[b, 0] > 0.5
        iou = (bright & m).sum() / (bright | m).sum()
        assert iou > 0.85, (b, float(iou))
    assert set(torch.unique(ya).tolist()) <= {0.0, 1.0}


def test_intensity_augmentation_leaves_mask_alone():
    x = torch.rand(4, 2, 32, 32)
    y = (torch.rand(4, 1, 32, 32) > 0.9).float()
    cfg = AugmentConfig(spatial_prob=0.0, flip=0.0, intensity_prob=1.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ya, y) and not torch.equal(xa, x)
