"""MONAI networks of :data:`clotseg.models.MODELS`: ``monai-unet`` (BasicUNet) and
``monai-dynunet``."""

from __future__ import annotations

from torch import nn


def monai_unet(in_channels: int = 2, base: int = 16, dropout: float = 0.1) -> nn.Module:
    """MONAI BasicUNet (2D, four pooling levels): pad inputs to a multiple of 16."""
    from monai.networks.nets import BasicUNet

    b = base
    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=1,
                     features=(b, b, 2 * b, 4 * b, 8 * b, b), dropout=dropout)


def monai_dynunet(in_channels: int = 2, base: int = 16, dropout: float = 0.0,
                  levels: int = 4) -> nn.Module:
    """MONAI DynUNet (nnU-Net-style U-Net), ``levels`` poolings: pad to 2**levels."""
    from monai.networks.nets import DynUNet

    kernels = [[3, 3]] * (levels + 1)
    strides = [[1, 1]] + [[2, 2]] * levels
    filters = [min(base * 2**i, 320) for i in range(levels + 1)]
    return DynUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, kernel_size=kernels,
                   strides=strides, upsample_kernel_size=strides[1:], filters=filters,
                   norm_name="batch", dropout=dropout or None)
