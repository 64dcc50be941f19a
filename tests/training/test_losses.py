"""Losses: the per-sample Dice weighs each clot alike and leaves clot-free samples to BCE."""

from __future__ import annotations

import pytest
import torch

from clotseg.training.losses import make_loss


def _batch():
    y = torch.zeros(3, 1, 16, 16)
    y[0, 0, 1:15, 1:15] = 1  # a large clot
    y[1, 0, 7:9, 7:9] = 1  # a small clot
    return y  # sample 2: no clot


def test_per_sample_dice_counts_a_small_clot_as_much_as_a_large_one():
    """Missing the small clot entirely costs the batch Dice little (its voxels are few)
    and the per-sample Dice a whole sample's worth."""
    y = _batch()
    good = torch.where(y > 0, 8.0, -8.0)
    miss_small = good.clone()
    miss_small[1] = -8.0
    batch, sample = make_loss("dice_bce"), make_loss("dice_bce_sample")
    batch_cost = (batch(miss_small, y) - batch(good, y)).item()
    sample_cost = (sample(miss_small, y) - sample(good, y)).item()
    assert batch_cost < 0.1 and sample_cost > 0.3  # both include the same BCE rise (0.04)


def test_per_sample_dice_leaves_a_clot_free_sample_to_the_bce():
    y = _batch()
    logits = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    a = logits.clone().requires_grad_(True)
    make_loss("dice_bce_sample")(a, y).backward()
    b = logits.clone().requires_grad_(True)
    torch.nn.BCEWithLogitsLoss()(b, y).backward()
    torch.testing.assert_close(a.grad[2], b.grad[2])
    assert not torch.allclose(a.grad[1], b.grad[1])


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="dice_bce_sample"):
        make_loss("tversky")
