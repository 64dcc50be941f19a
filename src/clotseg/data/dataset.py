"""Batches of 2.5D training slices drawn straight from the cached cohort.

Written by hand instead of a DataLoader over per-sample dictionaries: a batch is a few
tensor gathers (slab slices of several cases) followed by batched augmentation, which on a
GPU runs entirely on the device (the cohort is moved there once when it fits) and on a
2-core CPU avoids worker processes and per-sample Python overhead. Sampling is driven by a
seeded ``torch.Generator`` per epoch (and rank), which makes resumed runs reproducible.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from clotseg.data.cache import CachedCase
from clotseg.data.slabs import slab_indices


class SliceSampler:
    """Draws (case, slice) pairs, a ``clot_fraction`` of them from slices with clot."""

    def __init__(self, cases: list[CachedCase], clot_fraction: float):
        self.all = np.array([(i, z) for i, c in enumerate(cases) for z in range(c.image.shape[-1])])
        self.clot = np.array([(i, z) for i, c in enumerate(cases) for z in c.clot_slices])
        self.clot_fraction = clot_fraction if len(self.clot) else 0.0

    def __len__(self) -> int:
        return len(self.all)

    def draw(self, n: int, gen: torch.Generator) -> np.ndarray:
        n_clot = int(round(n * self.clot_fraction))
        a = torch.randint(len(self.all), (n - n_clot,), generator=gen).numpy()
        picks = [self.all[a]]
        if n_clot:
            b = torch.randint(len(self.clot), (n_clot,), generator=gen).numpy()
            picks.append(self.clot[b])
        return np.concatenate(picks)


class BatchMaker:
    """Assembles padded (B, 2*slab, H, W) inputs and (B, 1, H, W) masks on ``device``."""

    def __init__(self, cases: list[CachedCase], slab: int, multiple: int, device,
                 patch: int = 0):
        self.slab = slab
        self.patch = patch
        self.device = torch.device(device)
        h = max(c.image.shape[1] for c in cases)
        w = max(c.image.shape[2] for c in cases)
        self.size = (h + (-h) % multiple, w + (-w) % multiple)
        if patch:
            self.size = (max(self.size[0], patch), max(self.size[1], patch))
        on_device = self.device.type == "cuda" and _fits(cases, self.device)
        where = self.device if on_device else torch.device("cpu")
        with warnings.catch_warnings():  # read-only memory maps: we never write to them
            warnings.filterwarnings("ignore", message=".*not writable.*")
            # float16 cache -> tensors; zero-copy views of the memory maps on the CPU path.
            self.images = [torch.from_numpy(np.asarray(c.image)).to(where) for c in cases]
            self.masks = [torch.from_numpy(np.asarray(c.mask)).to(where) for c in cases]

    def make(self, picks: np.ndarray, gen: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch for ``picks`` (case, slice); with a patch size, crops centred near the clot
        on clot slices (with jitter) and anywhere on the others."""
        x, y = self._full(picks)
        if self.patch:
            x, y = self._crop(x, y, gen or torch.Generator().manual_seed(0))
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _crop(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        p, (H, W) = self.patch, x.shape[-2:]
        xs, ys = [], []
        for b in range(x.shape[0]):
            pos = torch.nonzero(y[b, 0])
            r = torch.rand(3, generator=gen)
            if len(pos):
                cy, cx = pos[int(r[0] * len(pos))].tolist()
                cy += int((r[1] - 0.5) * p / 2)
                cx += int((r[2] - 0.5) * p / 2)
            else:
                cy, cx = int(r[1] * H), int(r[2] * W)
            top = min(max(cy - p // 2, 0), H - p)
            left = min(max(cx - p // 2, 0), W - p)
            xs.append(x[b, :, top:top + p, left:left + p])
            ys.append(y[b, :, top:top + p, left:left + p])
        return torch.stack(xs), torch.stack(ys)

    def _full(self, picks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = self.size
        where = self.images[0].device
        # Explicit zeros: padding is the window minimum, never uninitialised memory.
        x = torch.zeros((len(picks), 2 * self.slab, H, W), device=where)
        y = torch.zeros((len(picks), 1, H, W), device=where)
        for b, (ci, z) in enumerate(picks):
            img, msk = self.images[ci], self.masks[ci]
            idx = torch.from_numpy(slab_indices(int(z), img.shape[-1], self.slab))
            sl = img[:, :, :, idx.to(img.device)].permute(0, 3, 1, 2).reshape(-1, *img.shape[1:3])
            top = (H - img.shape[1]) // 2
            left = (W - img.shape[2]) // 2
            x[b, :, top:top + img.shape[1], left:left + img.shape[2]] = sl.float()
            y[b, 0, top:top + img.shape[1], left:left + img.shape[2]] = msk[:, :, int(z)].float()
        return x, y


def _fits(cases: list[CachedCase], device) -> bool:
    need = sum(c.image.nbytes + c.mask.nbytes for c in cases)
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.5 * free
