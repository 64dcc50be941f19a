"""Segmentation losses on logits: soft Dice (MONAI) plus BCE or focal."""

from __future__ import annotations

import torch
from torch import nn


def make_loss(name: str) -> nn.Module:
    """``dice`` (the original's soft Dice, smooth 1, over the batch), ``dice_bce``,
    ``dice_bce_sample`` or ``dice_focal``."""
    from monai.losses import DiceFocalLoss, DiceLoss

    if name == "dice":
        return DiceLoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    if name == "dice_bce":
        return DiceBCE()
    if name == "dice_bce_sample":
        return DiceBCE(per_sample=True)
    if name == "dice_focal":
        return DiceFocalLoss(sigmoid=True, batch=True, gamma=2.0)
    raise ValueError(f"unknown loss {name!r} (dice, dice_bce, dice_bce_sample, dice_focal)")


class DiceBCE(nn.Module):
    """Soft Dice + binary cross-entropy, both on logits.

    The Dice is over the whole batch by default, where a long clot's voxels outweigh a
    small distal clot's. ``per_sample`` takes it per sample instead, so each clot counts
    alike; a sample without clot then has no Dice to score (numerator smoothing 0: its
    term is a constant with no gradient) and is learned from the BCE alone.
    """

    def __init__(self, per_sample: bool = False):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, batch=not per_sample,
                             smooth_nr=0.0 if per_sample else 1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)
