"""``monai-dynunet-3d``: a 3D U-Net (MONAI DynUNet) over a block of slices.

The 2.5D networks read a thin slab and mark its centre slice, so a clot is judged from a
few millimetres along the head-foot axis; a vessel that runs across the slices (the
internal carotid, the basilar artery, the M1 as it turns) shows its interrupted lumen only
over a longer stretch. This network reads ``data.slab`` slices of both scans as one volume
and marks every one of them, with 3D convolutions.

It keeps the slice networks' interface, so sampling, augmentation, modality dropout and
prediction stay shared: input ``(B, 2 * S, H, W)`` laid out ``[CTA slices..., NCCT
slices...]`` (the 2.5D slab), output logits ``(B, S, H, W)``, one per input slice. The
block is cut into a ``(B, 2, S, H, W)`` volume inside the model; training takes the loss
over all ``S`` slices (:func:`clotseg.training.trainer.train_step`) and prediction slides
the block along the slices and blends the overlaps
(:func:`clotseg.inference.engine.blend_weights`).

Layout (nnU-Net's rule for anisotropic voxels, as MONAI's DynUNet takes it): the first
level convolves in-plane only and the first pooling halves the plane alone, because the
training voxels are finer in-plane (0.68 mm) than across slices (1.05 mm on the phantom);
the next levels pool all three axes, the last the plane again. The slices are padded (edge
slice repeated) to a multiple of the slice-axis pooling, and the plane must be a multiple
of 16, as for the other networks (``data.pad_multiple``).

Deep supervision (``model.deep_supervision``, off by default): DynUNet adds output heads
at the next coarser decoder levels and, in training only, returns them upsampled beside
the full-resolution output, so the deep layers get a gradient straight from the target
rather than through the whole decoder. nnU-Net trains every 3D U-Net this way; here it is
an option because a 3D network gets few steps within a CPU budget, and that is where
shorter gradient paths are meant to help. Prediction and export see the full-resolution
output alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Pooling per level, (slices, rows, columns): 16 in-plane, 4 across slices.
STRIDES = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
#: Convolution kernels per level: in-plane only at full resolution.
KERNELS = ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
#: Slices are padded to a multiple of this (the product of the slice-axis strides).
SLICE_MULTIPLE = 4
#: Most deep-supervision heads: one per decoder level above the bottleneck's.
MAX_HEADS = len(STRIDES) - 2


class VolumetricUNet(nn.Module):
    """A 3D DynUNet behind the slab interface (module docstring)."""

    def __init__(self, in_channels: int = 6, base: int = 8, dropout: float = 0.0,
                 deep_supervision: int = 0):
        super().__init__()
        from monai.networks.nets import DynUNet

        if in_channels < 2 or in_channels % 2:
            raise ValueError(f"monai-dynunet-3d reads a CTA and an NCCT block of the same "
                             f"slices: in_channels must be an even number >= 2, got "
                             f"{in_channels}")
        if (not isinstance(deep_supervision, int) or isinstance(deep_supervision, bool)
                or not 0 <= deep_supervision <= MAX_HEADS):
            raise ValueError(f"monai-dynunet-3d: deep_supervision is a number of extra "
                             f"output heads in [0, {MAX_HEADS}], got {deep_supervision!r}")
        self.slices = in_channels // 2
        filters = [min(base * 2**i, 320) for i in range(len(STRIDES))]
        self.net = DynUNet(spatial_dims=3, in_channels=2, out_channels=1,
                           kernel_size=[list(k) for k in KERNELS],
                           strides=[list(s) for s in STRIDES],
                           upsample_kernel_size=[list(s) for s in STRIDES[1:]],
                           filters=filters, norm_name="batch", dropout=dropout or None,
                           deep_supervision=deep_supervision > 0,
                           deep_supr_num=max(1, deep_supervision))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != 2 * self.slices:
            raise ValueError(f"monai-dynunet-3d was built for {self.slices} slices per scan "
                             f"({2 * self.slices} channels), got {c} channels")
        v = x.reshape(b, 2, self.slices, h, w)
        extra = -self.slices % SLICE_MULTIPLE
        if extra:  # the last slice repeated, cut off again below
            v = F.pad(v, (0, 0, 0, 0, 0, extra), mode="replicate")
        if not torch.onnx.is_in_onnx_export():  # ONNX has no memory formats
            v = v.contiguous(memory_format=torch.channels_last_3d)
        out = self.net(v)
        self._release_heads()
        if out.ndim == 6:  # training with deep supervision: (B, 1 + heads, 1, D, H, W)
            return out[:, :, 0, :self.slices].contiguous()
        return out[:, 0, :self.slices].contiguous()

    def _release_heads(self) -> None:
        """Drop the head outputs DynUNet keeps from the last forward pass.

        Its skip layers write each head's output into a list shared with the network and
        leave it there; kept, those tensors would hold the batch's autograd graph in
        memory until the next step and make the module impossible to deep-copy (which
        validation does). The list is emptied in place, since the skip layers hold it.
        """
        heads = self.net.heads
        for i in range(len(heads)):
            heads[i] = _NO_HEAD


#: What a released head slot holds (a leaf tensor, as DynUNet's own initial value).
_NO_HEAD = torch.zeros(1)


def dynunet_3d(in_channels: int = 6, base: int = 8, dropout: float = 0.0,
               deep_supervision: int = 0) -> nn.Module:
    """The ``monai-dynunet-3d`` network: ``in_channels // 2`` slices per scan in and out;
    in training with ``deep_supervision`` heads, ``(B, 1 + heads, S, H, W)``, the
    full-resolution logits first."""
    return VolumetricUNet(in_channels=in_channels, base=base, dropout=dropout,
                          deep_supervision=deep_supervision)


def is_volumetric(model: nn.Module) -> bool:
    """True for a network with 3D convolutions (its weights take the 3D channels-last
    layout, not the 2D one the slice networks use)."""
    return any(isinstance(m, nn.Conv3d) for m in model.modules())


def memory_format(model: nn.Module) -> torch.memory_format:
    """The channels-last layout for ``model``'s weights: 3D for volumetric networks."""
    return torch.channels_last_3d if is_volumetric(model) else torch.channels_last
