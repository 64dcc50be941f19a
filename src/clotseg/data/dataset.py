"""Training batches of 2.5D slabs drawn from the cached cohort.

A batch is made in three steps, the same on every device:

1. :class:`SliceSampler` draws (case, slice) pairs, a ``clot_fraction`` of them from slices
   that contain clot, and a crop centre for each (near the clot on clot slices, near a
   hard or mined negative for those shares, anywhere in the slice otherwise);
2. a *source* gathers the slabs onto a common zero-padded canvas (every case centred on
   it): :class:`ResidentSource` holds the whole cohort in one device tensor and gathers a
   batch with a single indexing operation (the GPU path), while
   :class:`MemmapSource` reads slabs from the memory-mapped cache (the CPU and
   does-not-fit path; host RAM does not grow with the cohort), only the window around
   each crop that augmentation can reach (:func:`reach`);
3. :func:`clotseg.data.augment.augment_batch` crops to the training patch and augments, on
   the batch's device.

The target is the centre slice's clot mask, or every slab slice's for a volumetric network
(``BatchFactory(volumetric=True)``), warped and cropped with the images.

Every batch is seeded from ``(seed, epoch, rank, step)`` alone, so a batch does not depend
on which process or DataLoader worker makes it, and a resumed run sees exactly the batches
an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from clotseg.config import AugmentConfig
from clotseg.data.augment import (
    augment_batch,
    blur_slice_weights,
    drop_modality,
    isodense_clot,
    isodense_draws,
    thick_slice_draws,
    thick_slice_radius,
    thick_slice_weights,
    to_device,
    z_blur_draws,
)
from clotseg.data.cache import CachedCase
from clotseg.data.slabs import cta_projections, slab_indices
from clotseg.models.mirror import with_mirror


def batch_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, epoch, rank, step)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def canvas_size(cases: list[CachedCase], multiple: int, patch: int = 0) -> tuple[int, int]:
    """The largest slice of the cohort, padded to ``multiple`` (and at least ``patch``)."""
    h = max(c.plane[0] for c in cases)
    w = max(c.plane[1] for c in cases)
    h, w = h + (-h) % multiple, w + (-w) % multiple
    return max(h, patch), max(w, patch)


class SliceSampler:
    """Draws (case, slice) pairs and crop centres: ``clot_fraction`` around the clot,
    ``hard_fraction`` around hard-negative points (vessels and dense spots outside the
    clot, :func:`clotseg.data.cache.hard_negative_points`), ``mined_fraction`` around the
    network's own false positives once some are mined (:meth:`set_mined`), the rest
    anywhere."""

    def __init__(self, cases: list[CachedCase], clot_fraction: float, patch: int = 0,
                 hard_fraction: float = 0.0, clot_sampling: str = "slice",
                 mined_fraction: float = 0.0):
        self.planes = np.array([c.plane for c in cases], dtype=np.float64)
        self.all = np.array([(i, z) for i, c in enumerate(cases) for z in range(c.depth)],
                            dtype=np.int64)
        boxes = [np.column_stack([np.full(len(c.clot_boxes), i), c.clot_boxes])
                 for i, c in enumerate(cases) if len(c.clot_boxes)]
        self.clot = np.concatenate(boxes) if boxes else np.zeros((0, 6), np.int64)
        self.clot_fraction = clot_fraction if len(self.clot) else 0.0
        # "clot": each case's clot slices share one case's weight (data.clot_sampling)
        if clot_sampling not in ("slice", "clot"):
            raise ValueError(f"clot_sampling must be 'slice' or 'clot', got {clot_sampling!r}")
        self.clot_weights = None
        if clot_sampling == "clot" and len(self.clot):
            per_case = np.bincount(self.clot[:, 0])[self.clot[:, 0]]
            self.clot_weights = torch.from_numpy(1.0 / per_case)
        hard = [np.column_stack([np.full(len(c.hard_points), i), c.hard_points])
                for i, c in enumerate(cases) if len(c.hard_points)]
        self.hard = np.concatenate(hard) if hard else np.zeros((0, 4), np.int64)
        # hard negatives come out of the share that is not clot-centred
        self.hard_fraction = min(hard_fraction, 1.0 - self.clot_fraction) if len(self.hard) \
            else 0.0
        self.patch = patch
        self.mined_fraction = mined_fraction
        self.mined_points: dict[int, np.ndarray] = {}  # case index -> (m, 3) z, x, y
        self.mined = np.zeros((0, 4), np.int64)

    def __len__(self) -> int:
        return len(self.all)

    def set_mined(self, case: int, points: np.ndarray) -> None:
        """Replace case ``case``'s mined crop centres (``(m, 3)`` z, x, y; none: the
        network no longer errs there). Until a case has some, its share is drawn anywhere."""
        points = np.asarray(points, dtype=np.int64).reshape(-1, 3)
        if len(points):
            self.mined_points[int(case)] = points
        else:
            self.mined_points.pop(int(case), None)
        rows = [np.column_stack([np.full(len(p), i), p])
                for i, p in sorted(self.mined_points.items())]
        self.mined = np.concatenate(rows) if rows else np.zeros((0, 4), np.int64)

    def draw(self, n: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``picks`` (n, 2: case, slice) and ``centres`` (n, 2) in the case's pixels."""
        n_clot = int(round(n * self.clot_fraction))
        n_hard = min(int(round(n * self.hard_fraction)), n - n_clot)
        n_mined = (min(int(round(n * self.mined_fraction)), n - n_clot - n_hard)
                   if len(self.mined) else 0)
        n_any = n - n_clot - n_hard - n_mined
        a = torch.randint(len(self.all), (n_any,), generator=gen).numpy()
        picks = self.all[a]
        u = torch.rand(n, 4, generator=gen, dtype=torch.float64).numpy()
        centres = u[:n_any, :2] * self.planes[picks[:, 0]]  # anywhere in the slice
        if n_hard:  # a vessel or dense spot outside the clot, off the crop's centre
            h = self.hard[torch.randint(len(self.hard), (n_hard,), generator=gen).numpy()]
            jitter = (u[n_any:n_any + n_hard, :2] - 0.5) * 0.5 * self.patch
            picks = np.concatenate([picks, h[:, :2]])
            centres = np.concatenate([centres, h[:, 2:] + jitter])
        if n_mined:  # where the network called clot outside the clot, off the centre
            lo = n_any + n_hard
            m = self.mined[torch.randint(len(self.mined), (n_mined,), generator=gen).numpy()]
            jitter = (u[lo:lo + n_mined, :2] - 0.5) * 0.5 * self.patch
            picks = np.concatenate([picks, m[:, :2]])
            centres = np.concatenate([centres, m[:, 2:] + jitter])
        if n_clot:
            b = (torch.randint(len(self.clot), (n_clot,), generator=gen)
                 if self.clot_weights is None else
                 torch.multinomial(self.clot_weights, n_clot, replacement=True,
                                   generator=gen)).numpy()
            rows = self.clot[b]  # case, z, x0, x1, y0, y1
            # a point of the clot's box, then a jitter that keeps the box in the crop
            pt = rows[:, [2, 4]] + u[n - n_clot:, :2] * (rows[:, [3, 5]] - rows[:, [2, 4]])
            jitter = (u[n - n_clot:, 2:] - 0.5) * 0.75 * self.patch
            picks = np.concatenate([picks, rows[:, :2]])
            centres = np.concatenate([centres, pt + jitter])
        return picks, centres


class _Source:
    """Slabs of a cohort on a common canvas (cases centred), as float32 batches."""

    def __init__(self, cases: list[CachedCase], slab: int, canvas: tuple[int, int]):
        self.cases = cases
        self.slab = slab
        self.canvas = canvas
        self.depths = np.array([c.depth for c in cases], dtype=np.int64)
        self.offsets = np.array([((canvas[0] - c.plane[0]) // 2, (canvas[1] - c.plane[1]) // 2)
                                 for c in cases], dtype=np.int64)
        # slice spacing (mm) and whether slices are axial: thick-slice NCCT augmentation
        self.slice_spacing = np.array([float(c.spacing[2]) for c in cases], dtype=np.float64)
        self.axial = np.array([c.view == "axial" for c in cases], dtype=bool)
        self.device = torch.device("cpu")

    def gather(self, picks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def slice_window(self, picks: np.ndarray, radius: int, channel: int,
                     origins: np.ndarray | None = None, size: tuple[int, int] | None = None
                     ) -> torch.Tensor:
        """``(B, 2 * radius + 1, H, W)`` slices of one modality (``channel`` 0 CTA,
        1 NCCT) around each pick's slice (the edge slice repeated past the volume's ends,
        as :func:`clotseg.data.slabs.slab_indices` does), on the canvas or the same
        windows as :meth:`gather`."""
        raise NotImplementedError

    def mask_window(self, picks: np.ndarray, radius: int, origins: np.ndarray | None = None,
                    size: tuple[int, int] | None = None) -> torch.Tensor:
        """As :meth:`slice_window` for the clot masks, 0/1 float32, on the batches' device."""
        raise NotImplementedError

    def _rect(self, ci: int, origin, H: int, W: int) -> tuple[int, ...] | None:
        """Window corner in case ``ci``'s pixels and the part of it inside the case
        (``r0, c0, rs, re, cs, ce``), or None when the window lies in the padding."""
        h, w = self.cases[ci].plane
        r0, c0 = (int(v) for v in np.asarray(origin) - self.offsets[ci])
        rs, re, cs, ce = max(r0, 0), min(r0 + H, h), max(c0, 0), min(c0 + W, w)
        return None if rs >= re or cs >= ce else (r0, c0, rs, re, cs, ce)

    def hu_window(self, picks: np.ndarray, radius: int, origins: np.ndarray | None = None,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
        """As :meth:`slice_window` for the NCCT in HU (``CachedCase.ncct_hu``), read from
        the memory-mapped cache for either source (only the thick-slice augmentation needs
        it, for a few samples per batch); on the device of the batches."""
        return to_device(self._windows([c.ncct_hu for c in self.cases], picks, radius,
                                       origins, size), self.device)

    def _windows(self, volumes: list, picks: np.ndarray, radius: int,
                 origins: np.ndarray | None, size: tuple[int, int] | None) -> torch.Tensor:
        """``(B, 2 * radius + 1, H, W)`` float32 windows of slice-major ``(Z, X, Y)``
        arrays (one per case) around each pick's slice, zeros past the case, the edge
        slice repeated past its ends."""
        H, W = self.canvas if size is None else size
        if origins is None:  # the whole canvas
            origins = np.zeros((len(picks), 2), np.int64)
        out = torch.zeros((len(picks), 2 * radius + 1, H, W))
        for b, (ci, z) in enumerate(picks):
            rect = self._rect(int(ci), origins[b], H, W)
            if rect is None:
                continue
            r0, c0, rs, re, cs, ce = rect
            vol = volumes[ci]
            idx = np.clip(np.arange(int(z) - radius, int(z) + radius + 1), 0, vol.shape[0] - 1)
            s = np.asarray(vol[idx[0]:idx[-1] + 1, rs:re, cs:ce])[idx - idx[0]]
            out[b, :, rs - r0:re - r0, cs - c0:ce - c0] = torch.from_numpy(s.astype(np.float32))
        return out


class MemmapSource(_Source):
    """Reads each slab from the memory-mapped cache (one contiguous read per sample), or
    only a window of it around the sample's crop (``origins``/``size``): a 281-pixel slice
    of a whole-head ROI costs six times the reading and copying of the 112-pixel window a
    64-pixel crop can reach."""

    windowed = True

    def gather(self, picks, origins: np.ndarray | None = None,
               size: tuple[int, int] | None = None):
        """Slabs on the canvas, or the ``size`` windows of the canvas whose corners are
        ``origins`` (B, 2; may reach past the canvas: zeros there, as on the canvas)."""
        H, W = self.canvas if size is None else size
        if origins is None:
            origins = np.zeros((len(picks), 2), np.int64)
        # Explicit zeros: padding is the window minimum, never uninitialised memory.
        x = torch.zeros((len(picks), 2 * self.slab, H, W))
        y = torch.zeros((len(picks), 1, H, W))
        for b, (ci, z) in enumerate(picks):
            case = self.cases[ci]
            rect = self._rect(ci, origins[b], H, W)
            if rect is None:
                continue  # the window lies in the padding
            r0, c0, rs, re, cs, ce = rect
            idx = slab_indices(int(z), case.depth, self.slab)
            s = np.asarray(case.slices[idx[0]:idx[-1] + 1, :, rs:re, cs:ce])[idx - idx[0]]
            x[b, :, rs - r0:re - r0, cs - c0:ce - c0] = torch.from_numpy(
                s.transpose(1, 0, 2, 3).reshape(-1, re - rs, ce - cs).astype(np.float32))
            y[b, 0, rs - r0:re - r0, cs - c0:ce - c0] = torch.from_numpy(
                np.asarray(case.mask_slices[int(z), rs:re, cs:ce], dtype=np.float32))
        return x, y

    def slice_window(self, picks, radius, channel, origins=None, size=None):
        return self._windows([c.slices[:, channel] for c in self.cases], picks, radius,
                             origins, size)

    def mask_window(self, picks, radius, origins=None, size=None):
        return self._windows([c.mask_slices for c in self.cases], picks, radius, origins, size)


class ResidentSource(_Source):
    """The whole cohort in one ``(slices, 2, H, W)`` float16 tensor on ``device``: a batch
    is one gather, with no host work and no transfer per step."""

    def __init__(self, cases: list[CachedCase], slab: int, canvas: tuple[int, int], device):
        super().__init__(cases, slab, canvas)
        self.device = torch.device(device)
        H, W = canvas
        self.base = np.concatenate([[0], np.cumsum(self.depths)[:-1]]).astype(np.int64)
        total = int(self.depths.sum())
        self.images = torch.zeros((total, 2, H, W), dtype=torch.float16, device=self.device)
        self.masks = torch.zeros((total, H, W), dtype=torch.uint8, device=self.device)
        with warnings.catch_warnings():  # read-only memory maps: copied, never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            for ci, case in enumerate(cases):  # one case in host memory at a time
                (top, left), (h, w) = self.offsets[ci], case.plane
                z0, z1 = self.base[ci], self.base[ci] + case.depth
                self.images[z0:z1, :, top:top + h, left:left + w] = torch.from_numpy(
                    np.asarray(case.slices)).to(self.device)
                self.masks[z0:z1, top:top + h, left:left + w] = torch.from_numpy(
                    np.asarray(case.mask_slices)).to(self.device)
        h = slab // 2
        self._steps = torch.arange(-h, h + 1)

    def gather(self, picks):
        ci, z = torch.from_numpy(picks[:, 0]), torch.from_numpy(picks[:, 1])
        depth = torch.from_numpy(self.depths)[ci]
        zz = torch.minimum(torch.clamp(z[:, None] + self._steps, min=0), depth[:, None] - 1)
        base = torch.from_numpy(self.base)[ci]
        gidx = to_device(torch.cat([base[:, None] + zz, (base + z)[:, None]], 1), self.device)
        x = self.images[gidx[:, :-1]]  # (B, slab, 2, H, W) -> (B, 2*slab, H, W)
        x = x.transpose(1, 2).reshape(len(picks), 2 * self.slab, *self.canvas).float()
        y = self.masks[gidx[:, -1]][:, None].float()
        return x, y

    def slice_window(self, picks, radius, channel, origins=None, size=None):
        return self.images[self._window_index(picks, radius), channel].float()

    def mask_window(self, picks, radius, origins=None, size=None):
        return self.masks[self._window_index(picks, radius)].float()

    def _window_index(self, picks: np.ndarray, radius: int) -> torch.Tensor:
        """Global slice indices ``(B, 2 * radius + 1)`` around each pick, edges repeated."""
        ci, z = torch.from_numpy(picks[:, 0]), torch.from_numpy(picks[:, 1])
        depth = torch.from_numpy(self.depths)[ci]
        zz = torch.minimum(torch.clamp(z[:, None] + torch.arange(-radius, radius + 1), min=0),
                           depth[:, None] - 1)
        return to_device(torch.from_numpy(self.base)[ci][:, None] + zz, self.device)


def resident_bytes(cases: list[CachedCase], canvas: tuple[int, int]) -> int:
    """Device memory a :class:`ResidentSource` of ``cases`` needs."""
    return sum(c.depth for c in cases) * canvas[0] * canvas[1] * 5  # 2 x float16 + uint8


def reach(patch: int, cfg: AugmentConfig) -> int:
    """Side of the square around a crop's centre that its augmented sampling can touch:
    the crop's corners turned by any angle and stretched by ``1 / scale[0]`` (the warp
    maps output offsets through rotation and 1 / scale), plus bilinear neighbours and a
    margin; an even number, so a window around an even crop has whole-pixel corners."""
    smallest = float(cfg.scale[0]) if cfg.enabled and cfg.spatial_prob > 0 else 1.0
    radius = patch / 2 * (math.sqrt(2) if cfg.enabled and cfg.spatial_prob > 0 else 1.0)
    side = 2 * math.ceil(radius / smallest) + 4
    return side + (side - patch) % 2


class BatchFactory:
    """Makes training batch ``seed``: sample, gather, crop + augment, on the source's device."""

    def __init__(self, source: _Source, sampler: SliceSampler, batch_size: int, patch: int,
                 augment: AugmentConfig | None, windows: dict | None = None,
                 modality_dropout: float = 0.0, cta_mip: int = 0,
                 modality_dropout_ncct: float = 0.5, mirror: bool = False,
                 volumetric: bool = False):
        self.source, self.sampler = source, sampler
        # a volumetric network (models/volumetric.py) marks every slab slice: the target
        # is the clot mask of each of them, not of the centre slice alone
        self.volumetric = bool(volumetric)
        self.mirror = bool(mirror)  # model.mirror: batches carry the mirrored channels
        self.modality_dropout = float(modality_dropout)  # train.modality_dropout
        self.modality_dropout_ncct = float(modality_dropout_ncct)  # ... whose NCCT goes
        self.cta_mip = int(cta_mip)  # data.cta_mip: CTA projection channels
        self.batch_size, self.patch, self.augment = batch_size, patch, augment
        # HU per normalised unit of each modality, for augmentation set in HU
        self.hu_per_unit = None if windows is None else tuple(
            float(windows[k][1]) - float(windows[k][0]) for k in ("cta", "ncct"))
        self.ncct_window = None if windows is None else tuple(float(v) for v in windows["ncct"])

    def make(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        dev = self.source.device
        noise_gen = gen if dev.type == "cpu" else torch.Generator(dev).manual_seed(seed)
        picks, centres = self.sampler.draw(self.batch_size, gen)
        H, W = self.source.canvas
        cfg = self.augment or AugmentConfig(enabled=False)
        if self.patch:
            p = self.patch
            c = centres + self.source.offsets[picks[:, 0]]
            # keep the crop window inside the canvas; integer corner -> exact unaugmented crop
            top = np.clip(np.round(c - (p - 1) / 2), 0, [H - p, W - p])
            centre = top + (p - 1) / 2
            win = reach(p, cfg)
            window: tuple = ()
            # model.mirror mirrors the whole canvas, so it reads the whole canvas
            if (getattr(self.source, "windowed", False) and win < max(H, W)
                    and not self.mirror):
                origins = (top - (win - p) // 2).astype(np.int64)  # whole pixels
                window = (origins, (win, win))
                x, y = self.source.gather(picks, *window)
                centre = centre - origins
            else:
                x, y = self.source.gather(picks)
            centres_t = torch.from_numpy(centre)
            size = (p, p)
        else:
            x, y = self.source.gather(picks)
            window, centres_t, size = (), None, None
        if self.volumetric:
            y = self.source.mask_window(picks, self.source.slab // 2, *window)
        x = self.reslice(x, picks, cfg, gen, window)
        x = self.project(x, picks, window)
        x = self.isodense(x, picks, cfg, gen, window)
        if self.mirror:  # before the crop: the mirror is about the slice's centre
            x = with_mirror(x)
        x, y = augment_batch(x, y, cfg, gen, centres=centres_t, out_size=size,
                             noise_gen=noise_gen, hu_per_unit=self.hu_per_unit)
        return drop_modality(x, self.modality_dropout, gen, self.modality_dropout_ncct), y

    def reslice(self, x: torch.Tensor, picks: np.ndarray, cfg: AugmentConfig,
                gen: torch.Generator, window: tuple = ()) -> torch.Tensor:
        """Augmentation along the slice axis of axial samples, rebuilt from a window of thin
        slices around each slab (:mod:`clotseg.data.augment`):

        * ``augment.thick_ncct_prob``: the NCCT slab a scan reconstructed at a random
          thickness in ``augment.thick_ncct_mm`` (and a random slice phase) would give
          after resampling (:func:`thick_slice_weights`). Clinics often keep the NCCT at
          2.5-5 mm: the hyperdense clot is then averaged with the tissue above and below
          it and smeared along the head-foot axis, unlike any thin training NCCT;
        * ``augment.z_blur_prob``: both modalities blurred across slices with one Gaussian
          (sigma in ``augment.z_blur_mm``), the part of a blurrier scanner's 3D blur that
          the in-plane blur leaves out.

        The NCCT is averaged in HU when its cases carry it (``CachedCase.ncct_hu``, which
        the trainer caches for this: skull base averaged into a thick slice looks like a
        hyperdense clot, which a mean of the 0-100 HU window's clipped values cannot
        show), else, like the CTA, on the normalised (windowed) arrays, which is the same
        between the window's ends. Draws nothing when both are off, so other runs'
        batches are unchanged.
        """
        if not cfg.enabled or (cfg.thick_ncct_prob <= 0 and cfg.z_blur_prob <= 0):
            return x
        n, slab = len(picks), self.source.slab
        identity = np.eye(slab)
        weights: list[list] = [[identity] * n, [identity] * n]  # per modality and sample
        todo = np.zeros((2, n), bool)
        axial = self.source.axial[picks[:, 0]]
        spacing = self.source.slice_spacing[picks[:, 0]]
        if cfg.thick_ncct_prob > 0:
            hit, thick, phase = thick_slice_draws(n, cfg, gen)
            for i in np.flatnonzero(hit & axial):
                r = thick_slice_radius(slab, spacing[i], float(thick[i]))
                weights[1][i] = thick_slice_weights(slab, r, spacing[i], float(thick[i]),
                                                    float(phase[i]))
                todo[1, i] = True
        if cfg.z_blur_prob > 0:
            hit, sigma = z_blur_draws(n, cfg, gen)
            for i in np.flatnonzero(hit & axial):
                for m in (0, 1):
                    weights[m][i] = blur_slice_weights(weights[m][i], spacing[i],
                                                       float(sigma[i]))
                todo[:, i] = True
        if not todo.any():
            return x
        x = x.clone()
        origins, size = window if window else (None, None)
        for m in (0, 1):
            rows = np.flatnonzero(todo[m])
            if not len(rows):
                continue
            radius = max(weights[m][i].shape[1] for i in rows) // 2
            w = torch.from_numpy(np.stack([_pad_window(weights[m][i], radius) for i in rows]))
            where = None if origins is None else origins[rows]
            in_hu = m == 1 and self.ncct_window is not None and all(
                self.source.cases[ci].ncct_hu is not None for ci in picks[rows, 0])
            thin = (self.source.hu_window(picks[rows], radius, where, size) if in_hu
                    else self.source.slice_window(picks[rows], radius, m, where, size))
            out = torch.einsum("ksj,kjhw->kshw", to_device(w.float(), thin.device), thin)
            if in_hu:  # a mean in HU, then the network's window (as predict sees it)
                lo, hi = self.ncct_window
                out = ((out - lo) / (hi - lo)).clamp(0.0, 1.0)
            x[to_device(torch.from_numpy(rows), x.device), m * slab:(m + 1) * slab] = \
                out.to(x.dtype)
        return x

    def project(self, x: torch.Tensor, picks: np.ndarray, window: tuple = ()) -> torch.Tensor:
        """The slab's outer CTA slices replaced by projections over ``cta_mip`` slices
        (:func:`clotseg.data.slabs.cta_projections`), from the thin unaugmented CTA, as
        predict builds them; before augmentation, which then treats them as CTA."""
        if not self.cta_mip:
            return x
        origins, size = window if window else (None, None)
        thin = self.source.slice_window(picks, self.cta_mip, 0, origins, size)
        x = x.clone()
        above, below = cta_projections(to_device(thin, x.device), self.source.slab)
        x[:, 0], x[:, self.source.slab - 1] = above.to(x.dtype), below.to(x.dtype)
        return x

    def isodense(self, x: torch.Tensor, picks: np.ndarray, cfg: AugmentConfig,
                 gen: torch.Generator, window: tuple = ()) -> torch.Tensor:
        """``augment.isodense_prob``: the share of samples whose clot loses its hyperdense
        NCCT sign (:func:`clotseg.data.augment.isodense_clot`, with the mask of each slab
        slice), after the slab is resliced, so a thick NCCT loses it too. Draws nothing
        when off, so other runs' batches are unchanged."""
        if not cfg.enabled or cfg.isodense_prob <= 0:
            return x
        hit, strength = isodense_draws(len(picks), cfg, gen)
        rows = np.flatnonzero(hit)
        if not len(rows):
            return x
        slab = self.source.slab
        origins, size = window if window else (None, None)
        masks = self.source.mask_window(picks[rows], slab // 2,
                                        None if origins is None else origins[rows], size)
        index = to_device(torch.from_numpy(rows), x.device)
        x = x.clone()
        x[index, slab:] = isodense_clot(x[index, slab:], to_device(masks, x.device),
                                        torch.from_numpy(strength[rows]))
        return x


def _pad_window(weights: np.ndarray, radius: int) -> np.ndarray:
    """``(slab, 2 * r + 1)`` weights on a window of ``radius`` >= r slices each side."""
    extra = radius - weights.shape[1] // 2
    return np.pad(weights, ((0, 0), (extra, extra)))


class EpochBatches(torch.utils.data.Dataset):
    """Item ``i`` is the whole training batch ``seeds[i]`` (for a DataLoader with
    ``batch_size=None``: workers make whole batches in parallel)."""

    def __init__(self, factory: BatchFactory, seeds: list[int]):
        self.factory, self.seeds = factory, list(seeds)

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factory.make(self.seeds[i])


def batch_iterator(factory: BatchFactory, seeds: list[int], workers: int = 0,
                   pin_memory: bool = False):
    """Batches for ``seeds`` in order: straight from the factory when it works on the
    device (resident cohort) or without workers, else through a DataLoader."""
    if workers <= 0 or isinstance(factory.source, ResidentSource):
        return (factory.make(s) for s in seeds)
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return iter(torch.utils.data.DataLoader(
        EpochBatches(factory, seeds), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=pin_memory, multiprocessing_context=ctx, prefetch_factor=4))
