"""``fusion-unet``: one encoder per modality, weighted-sum fusion, shared decoder.

After Mojtahedi et al., Diagnostics 2022;12:698 (two-encoder U-Net with weighted-sum
feature fusion, their best variant). CTA channels (first half of the input) and NCCT
channels (second half) go through separate encoders; at every level the two feature maps
are combined as ``a * f_cta + b * f_ncct`` with learnable per-level scalars (a, b),
initialised at 0.5, and the fused features feed the skip connections and centre.
"""

from __future__ import annotations

import torch
from torch import nn

from clotseg.models.unet_original import Decoder, Encoder, centre_block


class FusionUNet(nn.Module):
    def __init__(self, in_channels: int = 2, base: int = 32, dropout: float = 0.1):
        super().__init__()
        if in_channels % 2:
            raise ValueError("fusion-unet needs an even channel count (CTA + NCCT slabs)")
        widths = [base, base * 2, base * 4]
        half = in_channels // 2
        self.half = half
        self.enc_cta = Encoder(half, widths, dropout)
        self.enc_ncct = Encoder(half, widths, dropout)
        self.weights = nn.Parameter(torch.full((len(widths) + 1, 2), 0.5))
        self.centre = centre_block(widths[-1], base * 8, dropout)
        self.decoder = Decoder(base * 8, widths, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1, x1 = self.enc_cta(x[:, : self.half])
        s2, x2 = self.enc_ncct(x[:, self.half:])
        w = self.weights
        skips = [w[i, 0] * a + w[i, 1] * b for i, (a, b) in enumerate(zip(s1, s2))]
        bottom = w[-1, 0] * x1 + w[-1, 1] * x2
        return self.decoder(self.centre(bottom), skips)


def fusion_unet(in_channels: int = 2, base: int = 32, dropout: float = 0.1) -> nn.Module:
    return FusionUNet(in_channels, base, dropout)
