"""``model.mirror``: the network also reads its input mirrored left to right.

A radiologist finds an occlusion on a CTA by comparing the two sides: the M1 that is dark
where its twin is bright, the middle-cerebral branches that fill late and faintly behind
the clot while the other side's fill at once. Locally, a clot whose NCCT sign is gone
(thick slices, noise) and a short slow-flow segment look alike on the CTA; what tells
them apart is along the vessel and across the midline. A 2D network sees the other side
only if its receptive field spans the head, and a training crop never contains it.

:class:`MirrorInput` hands the network, beside every input channel, the same channel
flipped along the left-right axis of the slice: each pixel then sees the mirror point of
the other hemisphere in its own receptive field. The flip is about the centre of the
slice the network is given. That is the other side only for a volume centred on the
head's mid-sagittal plane and not turned about it: ``clotseg preprocess --roi auto``
centres its box left to right on the head's mirror plane, while the phantom's volumes,
which follow the clot, lie a median 4-9 mm off it and turned 4-8 degrees
(``benchmarks/midline_offset.py``). On them the option measured worse on the unseen
site, and not only in the off-centre volumes (README, "Quality on unseen data").

At inference the flip lives inside the model, so validation, ``predict`` and the export
to ONNX need nothing of their own. A training crop's centre is not the midline, so
training batches are mirrored on the whole slice (the zero-padded canvas, each case
centred on it) before they are cropped and augmented, and reach the model already
mirrored (:class:`MirrorInput` tells them by their channel count). The state dict keys gain a ``net.`` prefix, and ``model.json`` records
``mirror: true`` among the model's arguments so that the model is rebuilt the same.

Canonical slices are ``(X, Y)`` with X the patient's left-right axis in the axial and
coronal views (:data:`clotseg.config.VIEWS`); a sagittal slice has no left-right axis,
so the config check refuses the option with that view.
"""

from __future__ import annotations

import torch
from torch import nn

#: Axis of a ``(B, C, H, W)`` batch along which the slices run left to right.
LEFT_RIGHT_DIM = 2


def with_mirror(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` slabs laid out ``[CTA..., NCCT...]`` -> ``(B, 2C, H, W)`` laid out
    ``[CTA..., CTA mirrored..., NCCT..., NCCT mirrored...]``, each mirrored block ``x``'s
    flipped along :data:`LEFT_RIGHT_DIM`. Grouped by modality, so that modality dropout
    and the per-modality augmentation treat a scan and its mirror alike, and a network
    that splits its input into a CTA half and an NCCT half (``fusion-unet``) still does."""
    # Channel slices, not a reshape: the spatial sizes stay free in an ONNX export.
    half = x.shape[1] // 2
    cta, ncct = x[:, :half], x[:, half:]
    return torch.cat([cta, torch.flip(cta, dims=(LEFT_RIGHT_DIM,)),
                      ncct, torch.flip(ncct, dims=(LEFT_RIGHT_DIM,))], dim=1)


class MirrorInput(nn.Module):
    """Runs ``net`` on :func:`with_mirror` of its input.

    Input of ``in_channels`` channels (whole slices: validation, ``predict``, the ONNX
    export) is mirrored here. Input that already holds ``2 * in_channels`` goes to the
    network as it is: training batches, which mirror the whole slice before they are
    cropped (:class:`clotseg.data.dataset.BatchFactory`), since a crop's own centre is
    not the midline.
    """

    def __init__(self, net: nn.Module, in_channels: int):
        super().__init__()
        self.net, self.in_channels = net, int(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 2 * self.in_channels:
            return self.net(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"mirrored model: expected {self.in_channels} input channels "
                             f"(or {2 * self.in_channels} already mirrored), got {x.shape[1]}")
        return self.net(with_mirror(x))


def mirrored(factory, in_channels: int, **kwargs) -> MirrorInput:
    """``factory(in_channels=2 * in_channels, **kwargs)`` wrapped in :class:`MirrorInput`."""
    return MirrorInput(factory(in_channels=2 * in_channels, **kwargs), in_channels)
