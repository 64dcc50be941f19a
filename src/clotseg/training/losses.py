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


def deep_supervision_loss(loss_fn: nn.Module, heads: torch.Tensor,
                          target: torch.Tensor) -> torch.Tensor:
    """``loss_fn`` over every output head of a deeply supervised volumetric network.

    ``heads``: ``(B, K, S, H, W)`` logits, the full-resolution output first and the
    coarser heads after it (upsampled by the network); ``target``: ``(B, S, H, W)``. Each
    coarser head weighs half the one before, and the weights sum to 1 (nnU-Net's
    convention), so the loss stays on the scale of a single head's and the training curves
    of runs with and without heads can be compared. MONAI's wrapper does the weighting.
    """
    from monai.losses import DeepSupervisionLoss

    k = heads.shape[1]
    weights = [0.5**i for i in range(k)]
    weights = [w / sum(weights) for w in weights]
    wrapped = DeepSupervisionLoss(loss_fn, weights=weights)
    return wrapped(list(heads.unsqueeze(2).unbind(1)), target.unsqueeze(1))
