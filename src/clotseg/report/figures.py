"""PNG figures of a case: axial slices through the clot and a maximum-intensity
projection, with reference (green) and predicted (red) outlines. Used by
``predict --preview`` and the HTML report. Slices are shown in the canonical
orientation (patient right on the image left, anterior up), whatever the storage order.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from clotseg.io.atomic import write_bytes
from clotseg.io.orientation import orientation_of
from clotseg.io.volume import Volume

CTA_WINDOW = (-50.0, 500.0)
NCCT_WINDOW = (0.0, 90.0)


def _canon(vol: Volume | None, orient) -> np.ndarray | None:
    return None if vol is None else np.asarray(orient.to_canonical(np.asarray(vol.array)))


def _pick_slices(ref, pred, depth: int, n: int) -> list[int]:
    for m in (ref, pred):
        if m is not None and m.any():
            zs = np.flatnonzero(m.any(axis=(0, 1)))
            centre = int(zs[np.argmax(m.sum(axis=(0, 1))[zs])])
            return sorted({int(np.clip(z, 0, depth - 1)) for z in
                           np.linspace(zs.min(), zs.max(), n).round().astype(int)} | {centre})[:n]
    return sorted({int(z) for z in np.linspace(depth * 0.35, depth * 0.65, n).round()})



def _save(fig, path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", facecolor="black")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        write_bytes(Path(path), data)
    return data


def _outline(ax, mask2d, color):
    if mask2d is not None and mask2d.any():
        ax.contour(mask2d.T.astype(float), levels=[0.5], colors=[color], linewidths=1.2)


def clot_slices_png(cta: Volume, ncct: Volume, ref: Volume | None, pred: Volume | None,
                    path: str | Path | None = None, n_slices: int = 3) -> bytes:
    """CTA (vessel window) and NCCT (brain window) axial slices through the clot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orient = orientation_of(cta.grid)
    c, n = _canon(cta, orient), _canon(ncct, orient)
    r = _canon(ref, orient)
    p = _canon(pred, orient)
    r = None if r is None else r > 0
    p = None if p is None else p > 0
    zs = _pick_slices(r, p, c.shape[2], n_slices)
    sp = orient.canonical_spacing(cta.spacing)
    aspect = sp[1] / sp[0]
    fig, axes = plt.subplots(2, len(zs), figsize=(3 * len(zs), 6), squeeze=False)
    for j, z in enumerate(zs):
        for i, (img, win, name) in enumerate(((c, CTA_WINDOW, "CTA"), (n, NCCT_WINDOW, "NCCT"))):
            ax = axes[i, j]
            ax.imshow(img[:, :, z].T, cmap="gray", vmin=win[0], vmax=win[1], aspect=aspect,
                      interpolation="nearest")
            _outline(ax, None if r is None else r[:, :, z], "lime")
            _outline(ax, None if p is None else p[:, :, z], "red")
            ax.set_title(f"{name} slice {z}", color="white", fontsize=9)
            ax.axis("off")
    return _save(fig, path)


def mip_png(cta: Volume, ref: Volume | None, pred: Volume | None,
            path: str | Path | None = None) -> bytes:
    """Axial maximum-intensity projection of the CTA with the clot outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orient = orientation_of(cta.grid)
    c = _canon(cta, orient)
    sp = orient.canonical_spacing(cta.spacing)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(np.clip(c, -100, 700).max(axis=2).T, cmap="gray", vmin=0, vmax=600,
              aspect=sp[1] / sp[0], interpolation="nearest")
    for vol, color in ((ref, "lime"), (pred, "red")):
        m = _canon(vol, orient)
        if m is not None:
            _outline(ax, (m > 0).any(axis=2), color)
    ax.set_title("CTA MIP (axial)", color="white", fontsize=9)
    ax.axis("off")
    return _save(fig, path)
