"""Batched 2.5D slice-by-slice prediction over whole volumes.

Shared by validation during training and by ``clotseg predict``. Works on a
:class:`~clotseg.data.slabs.PreparedCase` image (canonical, normalised) and returns a
probability volume in the same canonical order. The network is fully convolutional, so
the whole slice is processed at once (no 256-pixel limit, no sliding window needed for
head-sized slices).

What makes it fast (measured in ``benchmarks/predict_latency.py`` against a plain fp32
loop that feeds one slice at a time):

* slices go through the network in batches, under ``torch.inference_mode``, in
  channels-last memory layout (what oneDNN and cuDNN convolutions prefer);
* :func:`prepare_model` folds each batch norm into the convolution before it (exact up to
  float rounding) — fewer passes over memory;
* **empty input is not computed.** After windowing, air and anything below both windows
  is exactly 0 in both modalities. A slice whose whole slab is 0 in both modalities holds
  no tissue, so it cannot hold a clot: its probability is set to 0 without running the
  network. In-plane, the network runs on the bounding box of the non-zero input of the
  whole volume plus a margin of :data:`ROI_MARGIN` pixels of the surrounding (zero)
  input, and the probability outside the box is 0. On real scans (a head in a 512×512
  field of view with air around it and above the vertex) this skips a large share of
  the work, on a tightly cropped volume it changes nothing. The box edges sit on the
  same multiples of ``pad_multiple`` as the full padded slice, so pooling windows fall
  where they would in a full-slice pass, and the margin (64 px) exceeds the theoretical
  receptive-field radius of ``unet-original`` (≈ 51 px): on the tissue the result is the
  full-slice result up to rounding; only the air at the box's edge sees zero padding
  instead of the network's response to air;
* bf16 autocast on CUDA; fp32 on the CPU by default, so that a CPU gives the same masks
  as the plain fp32 loop. On CPUs with bf16 matrix units (AMX), ``precision="bf16"``
  is faster, but its masks are close to, not the same as, fp32's on every machine, hence
  opt-in (measurements: ``benchmarks/predict_latency.py`` and the README).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from clotseg.data.slabs import from_view, pad_amounts, slab_indices, to_view

#: In-plane pixels of zero input kept around the non-zero content (see module docstring).
ROI_MARGIN = 64

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX / AVX512-BF16) that oneDNN uses;
    elsewhere bf16 on the CPU is emulated and slower than fp32."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - depends on the torch build
        return False


def resolve_precision(device, precision: str = "auto") -> str:
    """``"bf16"`` or ``"fp32"``: ``auto`` is bf16 on CUDA cards that support it, fp32 on CPU."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if ok and precision != "fp32" else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def autocast_context(device, enabled: bool = True, precision: str | None = None):
    """bf16 autocast where it applies, else a no-op (fp32).

    Without ``precision`` this is bf16 on CUDA cards that support it (training's rule);
    ``precision="bf16"`` also enables it on the CPU.
    """
    import torch

    dev = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if resolve_precision(dev, precision or "auto") == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model, device="cpu", *, in_channels: int | None = None, fuse: bool = True,
                  channels_last: bool = True, check_size: int = 64):
    """An inference-ready version of ``model``: eval mode, on ``device``, batch norms folded
    into their convolutions, channels-last weights.

    Folding uses ``torch.fx``. It is checked on a random ``in_channels`` × ``check_size``²
    input (channels default to the first convolution's) against the unfolded network; a network that cannot be traced or folded faithfully is used as it
    is. The result is for inference only (a copy when folding succeeded).
    """
    model = model.to(device).eval()
    if fuse:
        model = _folded_or_original(model, device, in_channels, check_size)
    if channels_last:
        from clotseg.models.volumetric import memory_format

        model = model.to(memory_format=memory_format(model))
    return model


def _folded_or_original(model, device, in_channels: int | None, size: int):
    import torch
    from torch.fx.experimental.optimization import fuse as fx_fuse

    if in_channels is None:
        conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        if conv is None:
            return model
        in_channels = conv.in_channels
    x = torch.rand(1, in_channels, size, size, device=device,
                   generator=torch.Generator(device).manual_seed(0))
    try:
        folded = fx_fuse(model)
        with torch.inference_mode():
            want, got = model(x), folded(x)
        tol = 1e-4 * (1.0 + float(want.abs().max()))
        return folded if bool((want - got).abs().max() <= tol) else model
    except Exception:  # noqa: BLE001 - any tracing/folding failure: keep the original
        return model


def content_mask(image: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` bool: where any modality of a normalised image is above its window
    minimum (i.e. not air/background)."""
    return np.any(np.asarray(image) > 0, axis=0)


def active_slices(content: np.ndarray, slab: int) -> np.ndarray:
    """Indices of slices whose slab touches non-zero input (the others are skipped)."""
    has = content.any(axis=(0, 1))
    depth = has.size
    return np.array([z for z in range(depth) if has[slab_indices(z, depth, slab)].any()],
                    dtype=np.int64)


def inplane_box(content: np.ndarray, margin: int | None, multiple: int
                ) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane box to run the network on: ``((x0, x1), (y0, y1))`` in the coordinates of
    the full slice zero-padded (symmetrically) to ``multiple``, as a full-slice pass pads
    it. The box covers ``content`` plus ``margin`` and its edges are multiples of
    ``multiple``, so pooling windows fall exactly where they fall in a full-slice pass.
    The whole padded slice when the box would save under 10 % of it, nothing is there or
    ``margin`` is None.
    """
    padded = [n + sum(pad_amounts(n, multiple)) for n in content.shape[:2]]
    full = ((0, padded[0]), (0, padded[1]))
    if margin is None:
        return full
    plane = content.any(axis=2)
    if not plane.any():
        return full
    box = []
    for axis, hits in enumerate((np.flatnonzero(plane.any(axis=1)),
                                 np.flatnonzero(plane.any(axis=0)))):
        before = pad_amounts(content.shape[axis], multiple)[0]
        lo, hi = hits[0] + before - margin, hits[-1] + before + 1 + margin
        box.append((max(0, lo // multiple * multiple),
                    min(padded[axis], -(-hi // multiple) * multiple)))
    (x0, x1), (y0, y1) = box
    if (x1 - x0) * (y1 - y0) > 0.9 * padded[0] * padded[1]:
        return full
    return box[0], box[1]


def _box_in_image(box: tuple[int, int], size: int, multiple: int
                  ) -> tuple[slice, tuple[int, int]]:
    """For one axis: the image range a padded-coordinate box covers, and the zero padding
    (before, after) that completes it."""
    before = pad_amounts(size, multiple)[0]
    lo, hi = box[0] - before, box[1] - before
    start, stop = max(lo, 0), min(hi, size)
    return slice(start, stop), (start - lo, hi - stop)


def marks_every_slice(model) -> bool:
    """True for a volumetric network (:mod:`clotseg.models.volumetric`), which marks every
    slice of its input block rather than the centre slice; an engine object other than a
    torch module (the ONNX runner) says so through its ``volumetric`` attribute."""
    flag = getattr(model, "volumetric", None)
    if flag is not None:
        return bool(flag)
    from torch import nn

    from clotseg.models.volumetric import is_volumetric

    return isinstance(model, nn.Module) and is_volumetric(model)


def block_centres(zs: np.ndarray, depth: int, slab: int) -> np.ndarray:
    """Centre slices of the blocks a volumetric network is run on so that every slice of
    ``zs`` lies in at least one block: half a block apart (the overlap nnU-Net's sliding
    window uses), kept inside the volume where it is deep enough, so a block repeats an
    edge slice only in a volume shallower than the block.

    Examples:
        >>> block_centres(np.arange(40), 40, 17).tolist()
        [8, 16, 24, 31]
        >>> block_centres(np.array([0, 5, 10]), 40, 5).tolist()  # 5 lies in a gap
        [2, 5, 10]
    """
    r = slab // 2
    hi = max(r, depth - 1 - r)
    centres = np.clip(np.append(zs[::max(1, r)], zs[-1]), r, hi)
    covered = np.zeros(max(depth, int(centres.max()) + r + 1), bool)
    for c in centres:
        covered[max(0, c - r):c + r + 1] = True
    missed = zs[~covered[zs]]  # active slices beyond a gap in zs
    return np.unique(np.concatenate([centres, np.clip(missed, r, hi)]))


def blend_weights(slab: int) -> np.ndarray:
    """Weight of each block slice when the overlapping blocks of a volumetric network are
    averaged: a Gaussian over the block (sigma a quarter of it), so a slice counts most
    from the blocks it is central in, where the network sees most around it (as MONAI's
    and nnU-Net's Gaussian sliding-window blending). Written here because the blocks are
    the engine's slabs (edge slices repeated, empty input skipped), not a window grid.

    Examples:
        >>> w = blend_weights(17)
        >>> int(w.argmax()), round(float(w[0]), 2)
        (8, 0.17)
    """
    k = np.arange(slab, dtype=np.float64) - slab // 2
    return np.exp(-0.5 * (k / (slab / 4.0)) ** 2).astype(np.float32)


def predict_probabilities(model, image: np.ndarray, *, slab: int, pad_multiple: int,
                          batch_size: int = 16, device="cpu", amp: bool = True,
                          tta: bool = False, precision: str | None = None,
                          skip_empty: bool = True, roi_margin: int = ROI_MARGIN,
                          views: Sequence[str] = ("axial",), cta_mip: int = 0) -> np.ndarray:
    """Sigmoid probabilities ``(X, Y, Z)`` float32 for a canonical ``(2, X, Y, Z)`` image.

    ``views``: the slice orientations the model was trained on
    (:data:`clotseg.config.VIEWS`); each is predicted slice by slice and the
    probabilities are averaged. ``tta`` averages each view's prediction with its two
    in-plane flips (left-right and anterior-posterior for the axial view).
    ``amp=False`` forces fp32; otherwise ``precision`` (``auto``/``fp32``/``bf16``, see
    :func:`resolve_precision`) decides. ``skip_empty`` skips input that is 0 in both
    modalities (module docstring). ``cta_mip``: the CTA projection channels the model
    was trained with (:func:`clotseg.data.slabs.cta_projections`; 0 = none). The model
    is used as given: call :func:`prepare_model` once beforehand for the fast path.
    """
    views = list(views)
    if not views:
        raise ValueError("predict_probabilities: no view to predict (views is empty)")
    total = None
    for view in views:
        prob = from_view(_predict_slices(model, to_view(image, view), slab=slab,
                                         pad_multiple=pad_multiple, batch_size=batch_size,
                                         device=device, amp=amp, tta=tta,
                                         precision=precision, skip_empty=skip_empty,
                                         roi_margin=roi_margin, cta_mip=cta_mip), view)
        if len(views) == 1:
            return prob
        if total is None:
            total = np.array(prob, dtype=np.float32)  # a copy in canonical memory order
        else:
            total += prob
    total /= len(views)
    return total


def predict_alone(model, image: np.ndarray, prob: np.ndarray, alone: str, *, floor: float,
                  slab: int, pad_multiple: int, batch_size: int = 16, device="cpu",
                  amp: bool = True, tta: bool = False, precision: str | None = None,
                  skip_empty: bool = True, roi_margin: int = ROI_MARGIN,
                  views: Sequence[str] = ("axial",), cta_mip: int = 0) -> np.ndarray:
    """Probability from one scan alone (``alone``: ``"cta"`` or ``"ncct"``; the other's
    channels fed as :data:`clotseg.data.slabs.MISSING_VALUE`, as modality dropout trained
    the network to expect), computed only where it is read: on the axial slices on which
    ``prob`` (the both-scan map of the same image) reaches ``floor``, and one slice either
    side; 0 elsewhere. Other views than axial are computed whole.

    Used to ask whether a found clot is seen on each scan by itself
    (:mod:`clotseg.inference.support`). ``(X, Y, Z)`` float32, canonical, like
    :func:`predict_probabilities`, whose other arguments it shares.
    """
    if alone not in ("cta", "ncct"):
        raise ValueError(f"predict_alone: alone must be 'cta' or 'ncct', got {alone!r}")
    blank = 1 if alone == "cta" else 0  # the channel group of the scan left out
    hot = np.flatnonzero((np.asarray(prob) >= floor).any(axis=(0, 1)))
    depth = image.shape[-1]
    near = np.unique(np.clip(hot[:, None] + np.arange(-1, 2), 0, depth - 1))
    views = list(views)
    total = np.zeros(image.shape[1:], dtype=np.float32)
    if hot.size == 0:
        return total
    for view in views:
        total += from_view(_predict_slices(
            model, to_view(image, view), slab=slab, pad_multiple=pad_multiple,
            batch_size=batch_size, device=device, amp=amp, tta=tta, precision=precision,
            skip_empty=skip_empty, roi_margin=roi_margin, blank=blank,
            slices=near if view == "axial" else None, cta_mip=cta_mip), view)
    total /= len(views)
    return total


def _predict_slices(model, image: np.ndarray, *, slab: int, pad_multiple: int,
                    batch_size: int, device, amp: bool, tta: bool, precision: str | None,
                    skip_empty: bool, roi_margin: int, blank: int | None = None,
                    slices: np.ndarray | None = None, cta_mip: int = 0) -> np.ndarray:
    """:func:`predict_probabilities` of one view: slices across the last axis of a
    ``(2, X, Y, Z)`` image. ``blank``: modality (0 CTA, 1 NCCT) whose channels are fed as
    :data:`~clotseg.data.slabs.MISSING_VALUE`; ``slices``: predict only these (the rest
    stay 0); ``cta_mip``: as :func:`predict_probabilities`."""
    import torch

    from clotseg.data.slabs import MISSING_VALUE, cta_projections

    model.eval()
    dev = torch.device(device)
    _, nx, ny, depth = image.shape
    out = np.zeros((depth, nx, ny), dtype=np.float32)
    content = content_mask(image) if skip_empty else np.ones((nx, ny, 1), bool)
    zs = active_slices(content, slab) if skip_empty else np.arange(depth)
    if slices is not None:
        zs = np.intersect1d(zs, np.asarray(slices, dtype=zs.dtype))
    box = inplane_box(content, roi_margin if skip_empty else None, pad_multiple)
    if zs.size == 0:
        return out.transpose(1, 2, 0)
    (bx, (a0, a1)), (by, (b0, b1)) = (_box_in_image(b, n, pad_multiple)
                                      for b, n in zip(box, (nx, ny)))
    # (Z, 2, X', Y'): one contiguous copy, axial first, so that a batch is one gather.
    vol = torch.from_numpy(np.ascontiguousarray(
        np.asarray(image, dtype=np.float32)[:, bx, by].transpose(3, 0, 1, 2))).to(dev)
    crop = (slice(a0, a0 + vol.shape[-2]), slice(b0, b0 + vol.shape[-1]))
    flips = [(), (2,), (3,)] if tta else [()]
    volumetric = marks_every_slice(model)
    centres = block_centres(zs, depth, slab) if volumetric else zs
    step = max(1, batch_size // slab) if volumetric else batch_size
    if volumetric:  # blended sums of every block's slices, and of their weights
        acc = torch.zeros((depth, *vol.shape[-2:]), device=dev)
        weight_sum = torch.zeros(depth, device=dev)
        weights = torch.from_numpy(blend_weights(slab)).to(dev)
    with torch.inference_mode(), autocast_context(dev, amp, precision or "auto"):
        for start in range(0, centres.size, step):
            batch_z = centres[start:start + step]
            idx = torch.from_numpy(np.stack([slab_indices(int(z), depth, slab)
                                             for z in batch_z])).to(dev)
            # (B, slab, 2, X', Y') -> (B, 2*slab, X', Y'): [CTA slab..., NCCT slab...]
            x = vol[idx].permute(0, 2, 1, 3, 4).reshape(len(batch_z), -1, *vol.shape[-2:])
            if cta_mip:  # the outer CTA slices -> projections (before any blanking)
                wide = torch.from_numpy(np.stack([slab_indices(int(z), depth, 2 * cta_mip + 1)
                                                  for z in batch_z])).to(dev)
                x[:, 0], x[:, slab - 1] = cta_projections(vol[wide, 0], slab)
            if blank is not None:
                x[:, blank * slab:(blank + 1) * slab] = MISSING_VALUE
            x = torch.nn.functional.pad(x, (b0, b1, a0, a1))
            x = x.contiguous(memory_format=torch.channels_last)
            prob = None
            for f in flips:
                xf = torch.flip(x, f) if f else x
                y = torch.sigmoid(model(xf).float())
                y = torch.flip(y, f) if f else y
                prob = y if prob is None else prob + y
            prob = (prob / len(flips))[:, :, crop[0], crop[1]]
            if volumetric:
                acc.index_add_(0, idx.reshape(-1), (prob * weights.view(1, -1, 1, 1))
                               .reshape(-1, *prob.shape[-2:]))
                weight_sum.index_add_(0, idx.reshape(-1), weights.repeat(len(batch_z)))
            else:
                out[batch_z, bx, by] = prob[:, 0].cpu().numpy()
    if volumetric:  # only the slices asked for (and with input): the others stay 0
        blended = (acc[zs] / weight_sum[zs].clamp_min(1e-12).view(-1, 1, 1)).cpu().numpy()
        out[zs, bx, by] = blended
    return out.transpose(1, 2, 0)
