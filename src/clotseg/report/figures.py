"""PNG figures of one case, shared by ``predict --preview`` and the HTML report.

* :func:`clot_slices_png`: axial slices through the clot, CTA in a vessel window and NCCT
  in a brain window side by side, reference outline green, prediction outline red.
* :func:`mip_png`: axial maximum-intensity projection of the CTA (bone removed, slab
  around the clot) with the clot outlines.

Slices are shown in the radiological convention (patient right on the image left,
anterior up) whatever the stored orientation: arrays are brought to the canonical
(L, P, S) view of :mod:`clotseg.io.orientation` first, and pixels keep their physical
aspect ratio. Masks must be on the CTA grid (as every clotseg mask is).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from clotseg.io.atomic import write_bytes
from clotseg.io.orientation import Orientation, orientation_of
from clotseg.io.volume import Volume

#: Display windows (HU) of the figures: grey levels for a reader's eye only. They are not
#: the network input windows (:data:`clotseg.config.DEFAULT_WINDOWS`, which a trained
#: model depends on) and may be changed without touching any model. CTA: a vessel window
#: wide enough to separate the filling defect (≈ 50–80 HU) from the contrast lumen and
#: calcification; NCCT: a narrow brain window in which the hyperdense clot (≈ 50–60 HU)
#: stands out from blood (≈ 40 HU).
CTA_DISPLAY_WINDOW = (-50.0, 450.0)
NCCT_DISPLAY_WINDOW = (0.0, 80.0)
REF_COLOUR, PRED_COLOUR = "#33ff33", "#ff3333"


def _canonical(vol: Volume | None, orient: Orientation, like: Volume) -> np.ndarray | None:
    if vol is None:
        return None
    if tuple(vol.shape) != tuple(like.shape):
        raise ValueError(f"mask/volume shape {vol.shape} differs from the CTA's {like.shape}; "
                         "figures need everything on the CTA grid")
    return np.asarray(orient.to_canonical(np.asarray(vol.array)))


def _clot_slices(masks: list[np.ndarray | None], depth: int, n: int) -> list[int]:
    """Axial indices: centred on the clot (reference first, else prediction) and spread
    over its extent; the middle of the volume when there is no clot."""
    for m in masks:
        if m is not None and m.any():
            per_slice = m.sum(axis=(0, 1))
            zs = np.flatnonzero(per_slice)
            centre = int(round(float(np.average(np.arange(depth), weights=per_slice))))
            half = max((zs.max() - zs.min()) / 2.0, n / 2.0)
            picks = np.linspace(centre - half * 0.7, centre + half * 0.7, n) if n > 1 else [centre]
            return _unique_sorted(picks, depth, n, centre)
    mid = depth // 2
    return _unique_sorted(np.linspace(mid - n // 2, mid + n // 2, n) if n > 1 else [mid],
                          depth, n, mid)


def _unique_sorted(values, depth: int, n: int, centre: int) -> list[int]:
    out = sorted({int(np.clip(round(float(v)), 0, depth - 1)) for v in values})
    k = 1
    while len(out) < min(n, depth):  # fill with neighbours of the centre if rounding merged
        for cand in (centre - k, centre + k):
            if 0 <= cand < depth and cand not in out and len(out) < n:
                out.append(cand)
        k += 1
    return sorted(out)


def _outline(ax, mask2d: np.ndarray | None, colour: str) -> None:
    if mask2d is not None and mask2d.any():
        ax.contour(mask2d.T.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.0)


def _figure(nrows: int, ncols: int, panel_in: float = 3.0):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_in * ncols, panel_in * nrows + 0.3), facecolor="black")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / (panel_in * nrows + 0.3),
                        wspace=0.02, hspace=0.12)
    return fig, axes


def _save(fig, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, facecolor="black")
    data = buf.getvalue()
    if path is not None:
        write_bytes(Path(path), data)
    return data


def _show(ax, image2d: np.ndarray, window, aspect: float, title: str) -> None:
    ax.imshow(image2d.T, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
              interpolation="nearest", origin="upper")
    ax.set_title(title, color="white", fontsize=8, pad=2)
    ax.set_axis_off()


def clot_slices_png(cta: Volume | None, ncct: Volume | None, ref: Volume | None,
                    pred: Volume | None, path: str | Path | None = None,
                    n_slices: int = 3) -> bytes:
    """Axial slices through the clot centre; returns PNG bytes (and writes ``path``).

    One row per slice: CTA (vessel window) on the left, NCCT (brain window) on the right,
    reference outline green, prediction outline red. Without any clot the middle slices
    are shown. ``ncct``, ``ref`` and ``pred`` must be on the CTA grid. A one-modality
    case (``cta`` or ``ncct`` None) keeps both columns: the absent scan's panels are
    black, titled "no CTA" / "no NCCT", with the outlines still drawn, so the figure says
    what is missing instead of silently showing one column.

    Args:
        cta, ncct: the scans on one grid (either, not both, None).
        ref, pred: reference and predicted masks on that grid, or None.
        path: where to write the PNG, or None.
        n_slices: how many axial slices (rows).

    Examples:
        >>> import numpy as np
        >>> v = Volume(np.zeros((8, 8, 4), np.int16), (1.0, 1.0, 1.0))
        >>> clot_slices_png(None, v, None, None)[:4]
        b'\\x89PNG'
    """
    if n_slices < 1:
        raise ValueError("n_slices must be at least 1")
    base = cta if cta is not None else ncct
    if base is None:
        raise ValueError("a figure needs a CTA or an NCCT")
    orient = orientation_of(base.grid)
    c = _canonical(cta, orient, base)
    nc = _canonical(ncct, orient, base)
    r, p = (_canonical(v, orient, base) for v in (ref, pred))
    r = None if r is None else r > 0
    p = None if p is None else p > 0
    depth = (c if c is not None else nc).shape[2]
    zs = _clot_slices([r, p], depth, n_slices)
    sp = orient.canonical_spacing(base.spacing)
    aspect = sp[1] / sp[0]  # imshow aspect = height / width of one pixel
    fig, axes = _figure(len(zs), 2)
    for row, z in enumerate(zs):
        for col, (img, win, name) in enumerate(((c, CTA_DISPLAY_WINDOW, "CTA"),
                                                (nc, NCCT_DISPLAY_WINDOW, "NCCT"))):
            ax = axes[row, col]
            if img is None:  # the absent scan: a black panel that says so
                blank = np.zeros(_canonical(base, orient, base).shape[:2], np.float32)
                _show(ax, blank, (0.0, 1.0), aspect, f"no {name} (not given)")
            else:
                _show(ax, img[:, :, z], win, aspect, f"{name}  axial {z + 1}/{depth}")
            _outline(ax, None if r is None else r[:, :, z], REF_COLOUR)
            _outline(ax, None if p is None else p[:, :, z], PRED_COLOUR)
    return _save(fig, path)


#: Slab MIP: thickness around the clot (a usual thick-slab MIP for the circle of Willis)
#: and the HU above which voxels count as bone and are removed before projecting.
MIP_SLAB_MM = 30.0
BONE_HU = 750.0
#: MIP display window (HU): with bone gone, contrast-filled vessels (≈ 250–450 HU) are the
#: brightest structures left and can use the whole grey range.
MIP_DISPLAY_WINDOW = (0.0, 450.0)
#: HU range the CTA is clipped to before projecting, removed bone taking its lower end
#: (air-like, never the maximum). Display only, like the windows above; it is wider than
#: :data:`MIP_DISPLAY_WINDOW`, so it does not change the grey levels shown.
MIP_CLIP_HU = (-100.0, 700.0)


def _mip_source(c: np.ndarray, sp, masks: list[np.ndarray | None]) -> tuple[np.ndarray, str]:
    """CTA voxels to project: bone removed, limited to a slab around the clot.

    A whole-head axial MIP is dominated by the skull and skull base, which cover the
    vessels the clot sits in. Voxels above :data:`BONE_HU` (contrast-filled vessels stay
    below it), grown by 1.5 mm to take their partial-volume rim, are set to air, and the
    projection covers :data:`MIP_SLAB_MM` centred on the clot (whole volume without one).
    """
    from scipy import ndimage

    bone = c > BONE_HU
    if bone.any():
        radius = np.maximum(np.round(1.5 / np.asarray(sp, dtype=float)).astype(int), 1)
        bone = ndimage.binary_dilation(bone, np.ones(tuple(2 * radius + 1), dtype=bool))
    hu = np.where(bone, MIP_CLIP_HU[0], np.clip(c, *MIP_CLIP_HU))
    for m in masks:
        if m is not None and m.any():
            zs = np.flatnonzero(m.any(axis=(0, 1)))
            centre, half = (zs.min() + zs.max()) / 2.0, MIP_SLAB_MM / 2.0 / float(sp[2])
            lo, hi = max(int(np.floor(centre - half)), 0), int(np.ceil(centre + half)) + 1
            return hu[:, :, lo:hi], f"{MIP_SLAB_MM:.0f} mm slab around the clot"
    return hu, "whole volume"


def mip_png(cta: Volume, ref: Volume | None, pred: Volume | None,
            path: str | Path | None = None) -> bytes:
    """Axial maximum-intensity projection of the CTA, bone removed, over a slab around the
    clot, with the projected clot outlines (reference green, prediction red); returns PNG
    bytes (and writes ``path``)."""
    orient = orientation_of(cta.grid)
    c = _canonical(cta, orient, cta)
    sp = orient.canonical_spacing(cta.spacing)
    masks = [_canonical(vol, orient, cta) for vol in (ref, pred)]
    hu, extent = _mip_source(c, sp, masks)
    fig, axes = _figure(1, 1, panel_in=4.0)
    ax = axes[0, 0]
    _show(ax, hu.max(axis=2), MIP_DISPLAY_WINDOW, sp[1] / sp[0],
          f"CTA MIP (axial, bone removed, {extent})")
    for m, colour in zip(masks, (REF_COLOUR, PRED_COLOUR)):
        if m is not None:
            _outline(ax, (m > 0).any(axis=2), colour)
    return _save(fig, path)
