"""``unet-original``: the original CT-ClotSeg 2D U-Net, in PyTorch.

Faithful to the original architecture: three pooling levels with 32, 64 and 128 filters,
a 256-filter centre made of two 3x3 convolutions followed by two 1x1 convolutions, 3x3
convolutions with batch norm and ReLU, dropout 0.1, nearest-neighbour upsampling with
skip concatenation and a 1x1 head with one output. Differences, on purpose: the head
returns logits (the sigmoid lives in the loss and at inference, which is numerically
safer), the input takes ``2 * slab`` channels (slab = 1 is the original CTA + NCCT input)
and ``base`` scales the widths (32 = original) for a small CPU model.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    """Two 3x3 conv + batch norm + ReLU, with dropout in between (as the original)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
        nn.Dropout2d(dropout) if dropout else nn.Identity(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
    )


class Encoder(nn.Module):
    """Three conv blocks, each followed by 2x2 max pooling; returns the skip features."""

    def __init__(self, cin: int, widths: list[int], dropout: float):
        super().__init__()
        chans = [cin, *widths]
        self.blocks = nn.ModuleList(conv_block(a, b, dropout) for a, b in zip(chans, widths))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        return skips, x


def centre_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    """The original centre: two 3x3 convolutions, then two 1x1 convolutions."""
    layers = list(conv_block(cin, cout, dropout))
    for _ in range(2):
        layers += [nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """Nearest-neighbour upsampling, skip concatenation, conv block; 1x1 logit head."""

    def __init__(self, centre: int, widths: list[int], dropout: float, out_channels: int = 1):
        super().__init__()
        ups, prev = [], centre
        for w in reversed(widths):
            ups.append(conv_block(prev + w, w, dropout))
            prev = w
        self.blocks = nn.ModuleList(ups)
        self.head = nn.Conv2d(prev, out_channels, 1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block, skip in zip(self.blocks, reversed(skips)):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class UNetOriginal(nn.Module):
    def __init__(self, in_channels: int = 2, base: int = 32, dropout: float = 0.1):
        super().__init__()
        widths = [base, base * 2, base * 4]
        self.encoder = Encoder(in_channels, widths, dropout)
        self.centre = centre_block(widths[-1], base * 8, dropout)
        self.decoder = Decoder(base * 8, widths, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, x = self.encoder(x)
        return self.decoder(self.centre(x), skips)


def unet_original(in_channels: int = 2, base: int = 32, dropout: float = 0.1) -> nn.Module:
    return UNetOriginal(in_channels, base, dropout)
