"""Batched online augmentation in plain torch (runs on the GPU when the batch is there).

One random transform per sample, identical for all its channels (CTA and NCCT slabs) and
its mask:

* spatial: left-right / anterior-posterior flips, rotation and scale, fused with the
  training crop into a single ``affine_grid`` + ``grid_sample`` (bilinear for images;
  the mask is resampled bilinearly and thresholded at 0.5, so an untransformed crop is
  exact and a transformed one follows the image's boundary);
* intensity (images only, drawn per modality): brightness, contrast, gamma and a
  calibration offset in HU; then a simulated coarser resolution, Gaussian blur and
  Gaussian noise (in HU) per sample. Their ranges are wide on purpose (domain
  randomisation): scanners differ in noise, sharpness, contrast timing and calibration,
  and a model that has seen that spread in training is not thrown by a new site;
* along the slice axis (it needs thin slices beyond the slab, so it is applied where the
  slabs are gathered, :class:`clotseg.data.dataset.BatchFactory`): thick-slice NCCT
  (:func:`thick_slice_weights`) and the scanner's blur across slices
  (:func:`blur_slice_weights`; the intensity step blurs within the slice only);
* clot density (NCCT only, needs the mask of every slab slice, so also applied where the
  slabs are gathered): an isodense clot (:func:`isodense_clot`), which has no
  hyperdense sign on the NCCT and shows only as a filling defect on the CTA.

This is the original's family (flips, brightness/contrast, gamma, blur; CLAHE omitted)
plus rotation/scale and noise. Only ever applied to training batches. Random parameters
come from a CPU ``torch.Generator`` (a handful of numbers per sample, so the result does
not depend on the device); full-size noise comes from ``noise_gen`` on the batch's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from clotseg.config import AugmentConfig


def to_device(t: torch.Tensor, device, dtype=None) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without stalling a GPU: through pinned memory
    and asynchronously (a copy from pageable memory waits for all queued GPU work)."""
    device = torch.device(device)
    if dtype is not None:
        t = t.to(dtype)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def _chance(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) < p


def spatial_matrices(n: int, cfg: AugmentConfig | None, gen: torch.Generator) -> torch.Tensor:
    """Per-sample 2x2 maps (pixel units, (W, H) order) from output offsets to input offsets:
    rotation, 1/scale and flips; identity when augmentation is off."""
    eye = torch.eye(2, dtype=torch.float64).expand(n, 2, 2).clone()
    if cfg is None or not cfg.enabled:
        return eye
    flip_w = torch.where(_chance(gen, n, cfg.flip), -1.0, 1.0).double()  # anterior-posterior
    flip_h = torch.where(_chance(gen, n, cfg.flip), -1.0, 1.0).double()  # left-right
    apply = _chance(gen, n, cfg.spatial_prob)
    angle = torch.where(apply, _uniform(gen, n, -cfg.rotate_deg, cfg.rotate_deg), 0.0)
    scale = torch.where(apply, _uniform(gen, n, float(cfg.scale[0]), float(cfg.scale[1])), 1.0)
    a = angle * math.pi / 180
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    m = torch.stack([torch.stack([cos * flip_w, -sin * flip_h], -1),
                     torch.stack([sin * flip_w, cos * flip_h], -1)], -2)
    return m


def warp(x: torch.Tensor, y: torch.Tensor | None, centres: torch.Tensor,
         out_size: tuple[int, int], mats: torch.Tensor):
    """Resample ``x`` (B, C, H, W) and ``y`` (B, 1, H, W) onto ``out_size`` crops whose
    centre pixel maps to ``centres`` (B, 2: h, w; float pixel coordinates) through
    ``mats`` (B, 2, 2, as :func:`spatial_matrices`). Outside the input: zeros."""
    b, _, h, w = x.shape
    ph, pw = out_size
    m = mats.to(torch.float64)
    c = centres.to(torch.float64)
    theta = torch.empty(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = m[:, 0, 0] * pw / w
    theta[:, 0, 1] = m[:, 0, 1] * ph / w
    theta[:, 0, 2] = 2 * (c[:, 1] + 0.5) / w - 1
    theta[:, 1, 0] = m[:, 1, 0] * pw / h
    theta[:, 1, 1] = m[:, 1, 1] * ph / h
    theta[:, 1, 2] = 2 * (c[:, 0] + 0.5) / h - 1
    grid = F.affine_grid(to_device(theta, x.device, torch.float32), [b, 1, ph, pw],
                         align_corners=False)
    xo = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if y is None:
        return xo, None
    yo = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return xo, (yo >= 0.5).to(y.dtype)


def intensity(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
              noise_gen: torch.Generator | None = None,
              hu_per_unit: tuple[float, float] | None = None) -> torch.Tensor:
    """Brightness/contrast/gamma per modality, a calibration offset per modality (in HU),
    then low resolution, blur and noise per sample; images in [0, 1] laid out
    ``[CTA slab..., NCCT slab...]``. ``hu_per_unit`` (the width of each modality's HU
    window) converts the HU settings; without it they are skipped."""
    if not cfg.enabled:
        return x
    b, c, h, w = x.shape
    dev = x.device

    def per(n_mod, values):  # (B * 2,) draws -> broadcastable (B, 2, 1, 1, 1)
        return to_device(values, dev, torch.float32).view(b, n_mod, 1, 1, 1)

    v = x.view(b, 2, c // 2, h, w)
    n = 2 * b
    apply = per(2, _chance(gen, n, cfg.intensity_prob))
    contrast = per(2, _uniform(gen, n, 1 - cfg.contrast, 1 + cfg.contrast))
    bright = per(2, _uniform(gen, n, -cfg.brightness, cfg.brightness))
    gamma = per(2, torch.exp(_uniform(gen, n, math.log(cfg.gamma[0]), math.log(cfg.gamma[1]))))
    mean = v.mean(dim=(2, 3, 4), keepdim=True)
    changed = (((v - mean) * contrast + mean + bright).clamp(0, 1) ** gamma)
    out = torch.where(apply.bool(), changed, v)
    if hu_per_unit is not None and cfg.hu_shift > 0:  # scanner calibration drift
        scale = torch.tensor([1 / hu_per_unit[0], 1 / hu_per_unit[1]], dtype=torch.float64)
        shift = _uniform(gen, n, -cfg.hu_shift, cfg.hu_shift).view(b, 2) * scale
        out = out + per(2, shift.ravel() * _chance(gen, n, cfg.intensity_prob))
    out = out.reshape(b, c, h, w)
    if cfg.lowres_prob > 0:
        out = low_resolution(out, torch.where(
            _chance(gen, b, cfg.lowres_prob),
            _uniform(gen, b, float(cfg.lowres_zoom[0]), float(cfg.lowres_zoom[1])), 1.0))
    if cfg.blur_prob > 0:
        sigma = torch.where(_chance(gen, b, cfg.blur_prob),
                            _uniform(gen, b, float(cfg.blur_sigma[0]), float(cfg.blur_sigma[1])),
                            0.0)
        if (sigma > 0).any():
            out = gaussian_blur(out, sigma)
    if cfg.noise_prob > 0 and cfg.noise_std > 0:
        std = torch.where(_chance(gen, b, cfg.noise_prob), _uniform(gen, b, 0, cfg.noise_std), 0.0)
        if (std > 0).any():
            ng = noise_gen if noise_gen is not None else gen
            noise = torch.randn(out.shape, generator=ng, device=ng.device, dtype=out.dtype)
            out = out + noise.to(dev) * to_device(std, dev, out.dtype).view(b, 1, 1, 1)
    if hu_per_unit is not None and cfg.noise_prob > 0 and cfg.noise_hu > 0:
        # noise of another dose or reconstruction kernel: the same HU σ in both modalities
        sd = torch.where(_chance(gen, b, cfg.noise_prob), _uniform(gen, b, 0, cfg.noise_hu), 0.0)
        if (sd > 0).any():
            ng = noise_gen if noise_gen is not None else gen
            std = sd.view(b, 1) / torch.tensor([[hu_per_unit[0], hu_per_unit[1]]],
                                               dtype=torch.float64)
            noise = torch.randn(out.shape, generator=ng, device=ng.device, dtype=out.dtype)
            out = (out.view(b, 2, c // 2, h, w) + noise.to(dev).view(b, 2, c // 2, h, w)
                   * per(2, std.ravel())).view(b, c, h, w)
    return out


def low_resolution(x: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Simulate a coarser in-plane resolution: each sample with ``zoom`` < 1 is shrunk by
    that factor (area averaging) and enlarged back (bilinear)."""
    out = x.clone() if (zoom < 1).any() else x
    for i in torch.nonzero(zoom < 1).ravel().tolist():
        h, w = x.shape[-2:]
        small = (max(2, round(h * float(zoom[i]))), max(2, round(w * float(zoom[i]))))
        low = F.interpolate(x[i:i + 1], size=small, mode="area")
        out[i:i + 1] = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (0 = unchanged), one grouped
    convolution per axis for the whole batch. Written in torch (no kornia here) so that
    it runs on the batch's device."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    s = sigma.to(torch.float64).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * s**2))
    k = to_device(k / k.sum(dim=1, keepdim=True), x.device, x.dtype)  # sigma 0 -> delta kernel
    k = k.repeat_interleave(c, dim=0)  # (B*C, K)
    z = x.reshape(1, b * c, h, w)
    z = F.conv2d(F.pad(z, (radius, radius, 0, 0), mode="replicate"),
                 k.view(b * c, 1, 1, -1), groups=b * c)
    z = F.conv2d(F.pad(z, (0, 0, radius, radius), mode="replicate"),
                 k.view(b * c, 1, -1, 1), groups=b * c)
    return z.view(b, c, h, w)


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
                  *, centres: torch.Tensor | None = None, out_size: tuple[int, int] | None = None,
                  noise_gen: torch.Generator | None = None,
                  hu_per_unit: tuple[float, float] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images ``x`` (B, C, H, W) in [0, 1] and masks ``y`` (B, 1, H, W).

    With ``centres``/``out_size`` the spatial step also crops (see :func:`warp`); by
    default the output has the input's size, centred.
    """
    b, _, h, w = x.shape
    mats = spatial_matrices(b, cfg, gen)
    size = out_size or (h, w)
    if centres is None:
        centres = torch.tensor([[(h - 1) / 2, (w - 1) / 2]], dtype=torch.float64).expand(b, 2)
    corners = centres.to(torch.float64) - torch.tensor([(size[0] - 1) / 2, (size[1] - 1) / 2],
                                                       dtype=torch.float64)
    exact = (torch.equal(mats, torch.eye(2, dtype=mats.dtype).expand_as(mats))
             and torch.equal(corners, corners.round()) and corners.min() >= 0
             and (corners[:, 0] + size[0] <= h).all() and (corners[:, 1] + size[1] <= w).all())
    if exact:  # no spatial change: a plain window (bit-exact, cheaper than resampling)
        if size != (h, w):
            x, y = crop(x, corners.long(), size), crop(y, corners.long(), size)
    else:
        x, y = warp(x, y, centres, size, mats)
    return intensity(x, cfg, gen, noise_gen, hu_per_unit), y


def crop(x: torch.Tensor, corners: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-sample windows ``x[b, :, r:r+h, c:c+w]`` for ``corners`` (B, 2), one gather."""
    b = x.shape[0]
    corners = to_device(corners, x.device)
    rows = corners[:, :1] + torch.arange(size[0], device=x.device)
    cols = corners[:, 1:] + torch.arange(size[1], device=x.device)
    out = x[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None],
            cols[:, None, :]]  # (B, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous()


def thick_slice_draws(n: int, cfg: AugmentConfig, gen: torch.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: whether its NCCT is made thick (``augment.thick_ncct_prob``), the slice
    thickness (mm, uniform in ``augment.thick_ncct_mm``) and the phase of the thick grid
    (mm, uniform in [0, thickness)). Drawn for every sample, so the stream of random
    numbers does not depend on which samples are hit."""
    hit = _chance(gen, n, float(cfg.thick_ncct_prob))
    thick = _uniform(gen, n, float(cfg.thick_ncct_mm[0]), float(cfg.thick_ncct_mm[1]))
    phase = torch.rand(n, generator=gen, dtype=torch.float64) * thick
    return hit.numpy(), thick.numpy(), phase.numpy()


def thick_slice_radius(slab: int, spacing: float, thickness: float) -> int:
    """Thin slices each side of a slab's centre that :func:`thick_slice_weights` needs:
    the slab's half-width, plus the two thick slices bracketing its outer slices."""
    return slab // 2 + math.ceil(1.5 * thickness / spacing)


def thick_slice_weights(slab: int, radius: int, spacing: float, thickness: float,
                        phase: float) -> np.ndarray:
    """``(slab, 2 * radius + 1)`` weights that turn a window of thin slices into the slab
    a scan reconstructed at ``thickness`` mm would give after resampling onto the thin grid.

    A scanner's thick slice is the mean of the tissue over its thickness; ``preprocess``
    and ``predict`` then interpolate the thick slices linearly onto the CTA's (thin) grid.
    Both steps are linear along the slice axis, so they are one weight matrix: thick-slice
    centres at ``phase + k * thickness`` mm from the window's middle slice, each the
    overlap-weighted mean of the thin slices (``spacing`` mm apart, each ``spacing`` thick)
    within its thickness, and slab slice ``s`` (centred on the middle) the linear
    interpolation between the two centres around it. Hand-written: the resampling
    libraries resample whole volumes, and training needs it per sample on a few slices.
    ``radius`` must be at least :func:`thick_slice_radius`; every row sums to 1.

    Examples:
        >>> w = thick_slice_weights(3, 8, 1.0, 5.0, 0.0)
        >>> w.shape, bool(np.allclose(w.sum(axis=1), 1)), bool(np.allclose(w[1, 6:11], 0.2))
        ((3, 17), True, True)
    """
    h = slab // 2
    centres = (np.arange(2 * radius + 1) - radius) * spacing
    lo, hi = centres - spacing / 2, centres + spacing / 2
    weights = np.zeros((slab, 2 * radius + 1))
    for s in range(slab):
        f = ((s - h) * spacing - phase) / thickness
        k = math.floor(f)
        for kk, share in ((k, 1.0 - (f - k)), (k + 1, f - k)):
            c = phase + kk * thickness
            overlap = np.minimum(hi, c + thickness / 2) - np.maximum(lo, c - thickness / 2)
            weights[s] += share * np.clip(overlap, 0.0, None) / thickness
    return weights


def z_blur_draws(n: int, cfg: AugmentConfig, gen: torch.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: whether it is blurred along the slice axis (``augment.z_blur_prob``) and
    the Gaussian's sigma (mm, uniform in ``augment.z_blur_mm``), drawn for every sample."""
    hit = _chance(gen, n, float(cfg.z_blur_prob))
    sigma = _uniform(gen, n, float(cfg.z_blur_mm[0]), float(cfg.z_blur_mm[1]))
    return hit.numpy(), sigma.numpy()


def blur_slice_weights(weights: np.ndarray, spacing: float, sigma_mm: float) -> np.ndarray:
    """``weights`` (slab, 2 * r + 1) followed by a Gaussian blur of ``sigma_mm`` along the
    slice axis: ``(slab, 2 * (r + k) + 1)`` weights over a window ``k`` slices wider each
    side (the kernel's reach, 3 sigma). The scanner's blur acts on the thin volume before
    any thick-slice averaging, so it is the inner step.

    Examples:
        >>> w = blur_slice_weights(np.eye(3), 1.0, 1.0)
        >>> w.shape, bool(np.allclose(w.sum(axis=1), 1)), bool(w[1, 4] == w.max())
        ((3, 9), True, True)
    """
    k = max(1, math.ceil(3.0 * sigma_mm / spacing))
    t = np.arange(-k, k + 1) * spacing
    kernel = np.exp(-(t**2) / (2 * sigma_mm**2))
    kernel /= kernel.sum()
    return np.stack([np.convolve(row, kernel) for row in weights])


def isodense_draws(n: int, cfg: AugmentConfig, gen: torch.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` samples get an isodense clot, and the share of its excess density
    each loses (``augment.isodense_prob``, ``augment.isodense_strength``)."""
    hit = _chance(gen, n, cfg.isodense_prob).numpy()
    lo, hi = (float(v) for v in cfg.isodense_strength)
    return hit, _uniform(gen, n, lo, hi).numpy()


def isodense_clot(ncct: torch.Tensor, masks: torch.Tensor, strength: torch.Tensor,
                  ring: int = 2) -> torch.Tensor:
    """The NCCT of an isodense clot: inside each slice's clot mask, ``strength`` of the
    clot's excess over its surroundings (the median of a ``ring``-pixel band around the
    mask) is taken away, so the clot keeps its texture and noise but loses its
    hyperdense sign. Clots without the sign are common (fibrin-rich thrombi, thick NCCT
    slices, noisy scans), and a network that finds clots only by the sign misses them:
    trained on some of them it must find the CTA filling defect. Written by hand: no
    library edits an image's intensities inside a label against its own surroundings.

    Args:
        ncct: NCCT slabs ``(B, S, H, W)`` (any units).
        masks: clot masks of the same slices, ``(B, S, H, W)``, 0/1.
        strength: share of the excess removed per sample, ``(B,)``; 1 makes the clot's
            mean equal its surroundings'. A clot darker than its surroundings is left.

    Returns:
        A new tensor; slices without a clot, or without surroundings, are unchanged.
    """
    inside = masks > 0.5
    band = F.max_pool2d(inside.float(), 2 * ring + 1, stride=1, padding=ring) > 0.5
    band &= ~inside
    out = ncct.clone()
    for b, s in torch.nonzero(inside.any(dim=(2, 3)) & band.any(dim=(2, 3))).tolist():
        values = ncct[b, s]
        excess = values[inside[b, s]].mean() - values[band[b, s]].median()
        if excess > 0:
            out[b, s][inside[b, s]] -= float(strength[b]) * excess
    return out


def drop_modality(x: torch.Tensor, p: float, gen: torch.Generator,
                  ncct_share: float = 0.5) -> torch.Tensor:
    """Modality dropout (``train.modality_dropout``): each sample, with probability
    ``p``, gets the channels of one modality — the NCCT with probability ``ncct_share``
    (``train.modality_dropout_ncct``), else the CTA — set to
    :data:`clotseg.data.slabs.MISSING_VALUE`, what ``predict`` feeds for a scan a case
    does not have. Applied after augmentation so the dropped channels are exactly that
    value (no noise or brightness on top), as at prediction. ``p == 0`` draws nothing,
    so batches of a run without dropout are unchanged.

    Args:
        x: images (B, C, H, W) laid out ``[CTA slab..., NCCT slab...]``.
        p: the probability that a sample loses one modality, in [0, 1].
        gen: the batch's CPU generator (a handful of draws per batch).

    Returns:
        ``x`` with the dropped channels set (a new tensor when any is dropped).

    Examples:
        >>> x = torch.ones(4, 2, 3, 3)
        >>> y = drop_modality(x, 1.0, torch.Generator().manual_seed(0))
        >>> [int((y[i] == 0).all(dim=(1, 2)).sum()) for i in range(4)]
        [1, 1, 1, 1]
    """
    from clotseg.data.slabs import MISSING_VALUE

    if p <= 0:
        return x
    b, c = x.shape[:2]
    drop = _chance(gen, b, p)
    which = torch.rand(b, generator=gen, dtype=torch.float64) < ncct_share  # True: NCCT
    if not drop.any():
        return x
    half = torch.arange(c) >= c // 2  # channels of the NCCT block
    hit = drop[:, None] & torch.where(which[:, None], half[None, :], ~half[None, :])
    keep = to_device(hit, x.device).view(b, c, 1, 1)
    return torch.where(keep, torch.as_tensor(MISSING_VALUE, dtype=x.dtype, device=x.device), x)
