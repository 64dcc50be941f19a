"""Batched 2.5D slice-by-slice prediction over whole volumes.

Shared by validation during training and by ``clotseg predict``. Works on a
:class:`~clotseg.data.slabs.PreparedCase` image (canonical, normalised) and returns a
probability volume in the same canonical order. The network is fully convolutional, so
the whole slice is processed at once (no 256-pixel limit, no sliding window needed for
head-sized slices).
"""

from __future__ import annotations

import contextlib

import numpy as np

from clotseg.data.slabs import pad_to_multiple, slab_indices


def autocast_context(device, enabled: bool = True):
    """bf16 autocast on CUDA devices that support it; a no-op elsewhere (fp32 on CPU)."""
    import torch

    dev = torch.device(device)
    if enabled and dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_probabilities(model, image: np.ndarray, *, slab: int, pad_multiple: int,
                          batch_size: int = 16, device="cpu", amp: bool = True,
                          tta: bool = False) -> np.ndarray:
    """Sigmoid probabilities ``(X, Y, Z)`` float32 for a canonical ``(2, X, Y, Z)`` image.

    ``tta`` averages the prediction with left-right and anterior-posterior flips.
    """
    import torch

    model.eval()
    dev = torch.device(device)
    padded, crop = pad_to_multiple(image.transpose(0, 3, 1, 2), pad_multiple)  # (2, Z, X', Y')
    vol = torch.from_numpy(np.ascontiguousarray(padded)).to(dev)
    depth = image.shape[-1]
    out = np.empty((depth, image.shape[1], image.shape[2]), dtype=np.float32)
    flips = [(), (2,), (3,)] if tta else [()]
    with torch.inference_mode(), autocast_context(dev, amp):
        for start in range(0, depth, batch_size):
            zs = range(start, min(start + batch_size, depth))
            idx = torch.from_numpy(np.stack([slab_indices(z, depth, slab) for z in zs])).to(dev)
            # (2, B, slab, X, Y) -> (B, 2*slab, X, Y): [CTA slab..., NCCT slab...]
            batch = vol[:, idx].permute(1, 0, 2, 3, 4).reshape(len(zs), -1, *vol.shape[-2:])
            prob = torch.zeros((len(zs), 1, *vol.shape[-2:]), device=dev)
            for f in flips:
                x = torch.flip(batch, f) if f else batch
                y = torch.sigmoid(model(x).float())
                prob += torch.flip(y, f) if f else y
            prob /= len(flips)
            out[start:start + len(zs)] = prob[:, 0, crop[0], crop[1]].cpu().numpy()
    return out.transpose(1, 2, 0)
