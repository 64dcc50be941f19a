"""Batched online augmentation in torch (runs on the GPU when the batch is there).

One random transform per sample, applied identically to all its channels (CTA and NCCT
slabs) and its mask: flips, rotation and scale (one affine resampling: bilinear for the
images, nearest for the mask), then intensity changes on the images only: brightness,
contrast, gamma, Gaussian blur and noise. This is the original's family (flips,
brightness/contrast, gamma, blur) plus spatial transforms and noise. Only ever applied
to training batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clotseg.config import AugmentConfig


def _u(gen, n, lo, hi, device):
    return torch.rand(n, generator=gen).to(device) * (hi - lo) + lo


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images ``x`` (B, C, H, W) in [0, 1] and masks ``y`` (B, 1, H, W)."""
    if not cfg.enabled:
        return x, y
    b, dev = x.shape[0], x.device
    x, y = _spatial(x, y, cfg, gen, b, dev)
    return _intensity(x, cfg, gen, b, dev), y


def _spatial(x, y, cfg, gen, b, dev):
    flip_lr = (torch.rand(b, generator=gen) < cfg.flip).to(dev)
    flip_ap = (torch.rand(b, generator=gen) < cfg.flip).to(dev)
    apply = (torch.rand(b, generator=gen) < cfg.spatial_prob).to(dev)
    angle = _u(gen, b, -cfg.rotate_deg, cfg.rotate_deg, dev) * math.pi / 180 * apply
    scale = torch.where(apply, _u(gen, b, cfg.scale[0], cfg.scale[1], dev),
                        torch.ones(b, device=dev))
    sx = torch.where(flip_ap, -1.0, 1.0) / scale  # x of affine_grid runs along W (axis 3)
    sy = torch.where(flip_lr, -1.0, 1.0) / scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    if not (apply.any() or flip_lr.any() or flip_ap.any()):
        return x, y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, y


def _intensity(x, cfg, gen, b, dev):
    apply = (torch.rand(b, generator=gen) < cfg.intensity_prob).to(dev).view(b, 1, 1, 1)
    bright = _u(gen, b, -cfg.brightness, cfg.brightness, dev).view(b, 1, 1, 1)
    contrast = _u(gen, b, 1 - cfg.contrast, 1 + cfg.contrast, dev).view(b, 1, 1, 1)
    gamma = torch.exp(_u(gen, b, math.log(cfg.gamma[0]), math.log(cfg.gamma[1]), dev))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = ((x - mean) * contrast + mean + bright).clamp(0, 1) ** gamma.view(b, 1, 1, 1)
    if cfg.blur_prob > 0:
        blur = (torch.rand(b, generator=gen) < cfg.blur_prob).to(dev).view(b, 1, 1, 1)
        out = torch.where(blur, _blur(out, 0.8), out)
    if cfg.noise_std > 0:
        noise = torch.randn(x.shape, generator=gen).to(dev) * cfg.noise_std
        out = out + noise * (torch.rand(b, generator=gen) < 0.5).to(dev).view(b, 1, 1, 1)
    return torch.where(apply, out, x)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = 2
    k = torch.exp(-torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"),
                    k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
