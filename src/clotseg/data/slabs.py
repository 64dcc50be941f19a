"""What training and inference share about the network input: HU windowing, canonical
(axial-last) orientation, 2.5D slabs and padding. Keeping it in one place guarantees that
``predict`` feeds the network exactly what ``train`` did. The default windows themselves
are :data:`clotseg.config.DEFAULT_WINDOWS`, the one definition.

Channel order of one input sample: ``[CTA z-h .. CTA z+h, NCCT z-h .. NCCT z+h]`` with
``h = slab // 2``; slices beyond the volume repeat the edge slice.

**A missing modality** (a one-modality case at ``predict``, a modality dropped by
``train.modality_dropout`` in training) is all its channels set to :data:`MISSING_VALUE`,
0 in normalised units. Why 0: it is the value everything below a window (air) already
has, so the empty-slice skip and the in-plane box of :mod:`clotseg.inference.engine`
(which look for non-zero input) follow the scan that exists and stay correct; the
padding is 0 too, so nothing new appears at a slice's edge; and the network can still
tell "missing" from "air" because the other modality shows tissue where this one is
flat. Training (:func:`clotseg.data.augment.drop_modality`) and prediction
(:func:`prepare_case` with ``missing``) both write exactly this value, after any
augmentation, so the network sees the same thing in both.

**CTA projections** (``data.cta_mip`` = R slices, 0 = off): the outermost CTA channels of
the slab, slices ``z-h`` and ``z+h``, become maximum-intensity projections of the CTA over
slices ``z-R .. z-h`` and ``z+h .. z+R`` (the thick-slab MIPs a radiologist reads a CTA
with to see where a vessel stops). A clot is told from tissue by the opacified lumen it
interrupts, which for a vessel that leaves the slice (the ICA, M2 branches) lies beyond a
thin slab: a vessel bright in the projections above and below and dark in the centre
slice is a filling defect. Same channel count, so every other code path is unchanged;
training (:class:`clotseg.data.dataset.BatchFactory`) and predict
(:mod:`clotseg.inference.engine`) build them with :func:`cta_projections`.

**Views** (``data.views``): the slices a 2.5D network reads may be cut along any of the
three canonical axes, not only the axial one. A vessel that runs head-to-foot (the ICA,
the basilar artery) is a small disc on every axial slice, and a slab of three axial slices
shows 2–4 mm of it. Coronal and sagittal slices show that vessel along its length. A
model trained on slices of several views predicts each view and averages the
probabilities (multi-planar, "2.5D in three orientations"): context along every axis
for the cost of one 2D pass per view. Measured at a 30-minute CPU budget it was not
better: the views share the training samples, and long ICA clots came out shorter
(README, "Quality on unseen data"); hence axial only by default.
:data:`clotseg.config.VIEWS` gives, per view, which canonical axes become the view's
``(X, Y, Z)``; the view's Z is its slice axis, so every slice-wise code path works on a
view unchanged (:func:`to_view`, :func:`from_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clotseg.config import DEFAULT_WINDOWS, VIEWS
from clotseg.io.orientation import Orientation, orientation_of
from clotseg.io.volume import Volume

#: The normalised value of every channel of a missing modality (module docstring).
MISSING_VALUE = 0.0
#: Channel block of each modality in a prepared image (``image[i]``) and in a slab batch.
MODALITY_INDEX = {"cta": 0, "ncct": 1}


def _view_axes(view: str, ndim: int) -> tuple[int, ...]:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    lead = ndim - 3  # a channel axis in front, or none
    return tuple(range(lead)) + tuple(lead + a for a in VIEWS[view])


def to_view(array: np.ndarray, view: str) -> np.ndarray:
    """``array`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``, canonical) with its axes in ``view``'s
    order (a transposed view, no copy).

    Examples:
        >>> a = np.zeros((2, 4, 5, 6))
        >>> to_view(a, "coronal").shape, to_view(a[0], "sagittal").shape
        ((2, 4, 6, 5), (5, 6, 4))
    """
    return np.asarray(array).transpose(_view_axes(view, np.ndim(array)))


def from_view(array: np.ndarray, view: str) -> np.ndarray:
    """The inverse of :func:`to_view`: a view-ordered array back in canonical order.

    Examples:
        >>> a = np.arange(24).reshape(2, 3, 4)
        >>> all(np.array_equal(from_view(to_view(a, v), v), a) for v in VIEWS)
        True
    """
    return np.asarray(array).transpose(np.argsort(_view_axes(view, np.ndim(array))))


def normalize(array: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map HU in ``window`` linearly to [0, 1] (clipped), as float32."""
    lo, hi = float(window[0]), float(window[1])
    out = (np.asarray(array, dtype=np.float32) - lo) * (1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass
class PreparedCase:
    """One case as the network sees it: canonical (L, P, S) float32 arrays in [0, 1]."""

    case_id: str
    image: np.ndarray  # (2, X, Y, Z): channel 0 = CTA, 1 = NCCT, normalised
    mask: np.ndarray | None  # (X, Y, Z) uint8, canonical
    orientation: Orientation
    spacing: tuple[float, ...]  # canonical axis order


def prepare_case(case_id: str, cta: Volume, ncct: Volume, mask: Volume | None,
                 windows: dict[str, tuple[float, float]] | None = None,
                 missing: str | None = None) -> PreparedCase:
    """Normalise both modalities and bring them to canonical axial-last order.

    NCCT and mask must already be on the CTA grid (``clotseg.preprocess`` resamples).

    Args:
        case_id: named in errors.
        cta, ncct: the scans on one grid; the one named by ``missing`` is only a stand-in
            for its grid (its values are ignored).
        mask: the clot mask on that grid, or None.
        windows: HU window per modality (default :data:`clotseg.config.DEFAULT_WINDOWS`).
        missing: ``"cta"`` or ``"ncct"``: that modality's channel is set to
            :data:`MISSING_VALUE` (a one-modality case); None: both are real.

    Examples:
        >>> import numpy as np
        >>> v = Volume(np.full((4, 4, 2), 50, np.int16), (1.0, 1.0, 1.0))
        >>> p = prepare_case("c", v, v, None, missing="ncct")
        >>> float(p.image[1].max()), float(p.image[0].max()) > 0
        (0.0, True)
    """
    windows = windows or DEFAULT_WINDOWS
    if missing is not None and missing not in MODALITY_INDEX:
        raise ValueError(f"missing must be 'cta', 'ncct' or None, got {missing!r}")
    for name, vol in (("NCCT", ncct), ("mask", mask)):
        if vol is not None and not vol.grid.same_as(cta.grid):
            diff = "; ".join(vol.grid.differences(cta.grid))
            raise ValueError(f"case {case_id}: {name} grid differs from CTA grid ({diff}); "
                             "run `clotseg preprocess` first")
    orient = orientation_of(cta.grid)
    image = np.stack([_channel(vol, name, windows, orient, missing)
                      for name, vol in (("cta", cta), ("ncct", ncct))])
    m = None
    if mask is not None:
        m = np.ascontiguousarray(orient.to_canonical(np.asarray(mask.array) > 0).astype(np.uint8))
    return PreparedCase(case_id, np.ascontiguousarray(image), m, orient,
                        orient.canonical_spacing(cta.spacing))


def _channel(vol: Volume, name: str, windows: dict, orient: Orientation,
             missing: str | None) -> np.ndarray:
    """One modality's canonical, normalised channel; :data:`MISSING_VALUE` everywhere
    for the missing one (its stand-in volume is never read)."""
    if name == missing:
        shape = tuple(int(vol.shape[p]) for p in orient.perm)  # canonical axis order
        return np.full(shape, MISSING_VALUE, np.float32)
    return normalize(orient.to_canonical(vol.array), windows[name])


def slab_indices(z: int, depth: int, slab: int) -> np.ndarray:
    """Indices of the ``slab`` slices centred on ``z`` (edge slices repeated)."""
    h = slab // 2
    return np.clip(np.arange(z - h, z + h + 1), 0, depth - 1)


def slab(image: np.ndarray, z: int, slab_size: int) -> np.ndarray:
    """Input channels ``(2 * slab_size, X, Y)`` for slice ``z`` of a (2, X, Y, Z) image."""
    idx = slab_indices(z, image.shape[-1], slab_size)
    return image[:, :, :, idx].transpose(0, 3, 1, 2).reshape(-1, *image.shape[1:3])


def cta_projections(window, slab_size: int):
    """The two CTA projection channels (module docstring) from a ``(B, 2R+1, H, W)``
    torch window of CTA slices centred on each sample's slice: the maximum over slices
    ``z-R .. z-h`` and over ``z+h .. z+R`` (``h = slab_size // 2``), each ``(B, H, W)``."""
    radius, h = window.shape[1] // 2, slab_size // 2
    return window[:, :radius - h + 1].amax(dim=1), window[:, radius + h:].amax(dim=1)


def pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    """Symmetric (before, after) padding that makes ``size`` a multiple of ``multiple``."""
    total = (-size) % multiple
    return total // 2, total - total // 2


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Zero-pad the last two axes to a multiple; return the array and the crop to undo it.

    Padding is explicit zeros (window minimum), never uninitialised memory.
    """
    (a0, a1), (b0, b1) = pad_amounts(x.shape[-2], multiple), pad_amounts(x.shape[-1], multiple)
    pad = [(0, 0)] * (x.ndim - 2) + [(a0, a1), (b0, b1)]
    out = np.pad(x, pad) if (a0 or a1 or b0 or b1) else x
    return out, (slice(a0, a0 + x.shape[-2]), slice(b0, b0 + x.shape[-1]))
