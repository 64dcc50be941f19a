"""Per-clot measurements written to ``clots.csv``.

One row per 26-connected component of a (predicted) clot mask, largest first, numbered
``component`` = 1..n with ``n_components`` repeated on every row. A case without any clot
gets a single row with ``component`` 0, ``n_components`` 0, volume and length 0 and NaN
densities, so that every case appears in the table; its ``max_prob`` is the highest
probability anywhere (how close the model came to finding something).

Everything is measured on the original CTA grid: mask, CTA and NCCT must share it. A
one-modality case is measured on its one scan's grid, and what needs the absent scan is
NaN (empty), never estimated: without an NCCT ``ncct_*``, ``perviousness_hu``,
``pervious``, ``contralateral_ncct_mean_hu`` and ``relative_density``; without a CTA
``cta_mean_hu``, ``perviousness_hu``, ``pervious`` and the contralateral values (the CTA
finds the contralateral artery).

* ``volume_mm3``: voxel count × voxel volume.
* ``length_mm``: centreline arc length (:mod:`clotseg.measure.centreline`).
* ``ncct_mean_hu`` / ``ncct_median_hu``: clot density; ``cta_mean_hu``.
* ``perviousness_hu``: mean CTA − mean NCCT in the clot (thrombus attenuation increase);
  ``pervious`` when ≥ 10.9 HU (Santos 2016, Stroke 47:732).
* ``centroid_*_mm``: centre of the clot voxels in LPS patient coordinates (mm).
* ``max_prob``: highest predicted probability inside the clot (NaN without a map).
* ``contralateral_ncct_mean_hu`` and ``relative_density`` (clot / contralateral NCCT
  mean): see :func:`contralateral_ncct_mean`, mirrored across the head's midline on the
  NCCT or, when the head is not wholly in view, the arteries' mirror plane if the CTA
  fixes it to within 3 mm (:mod:`clotseg.measure.midline`); NaN when neither is found,
  or the mirror image falls outside the scan or onto the clot itself (a midline clot,
  e.g. basilar).
* ``side``: ``left`` / ``right`` / ``midline`` (within 4 mm) from the centroid and the
  head's midline estimated on the CTA (:mod:`clotseg.measure.midline`: the head's
  outline, or the arteries' mirror plane when the head is not wholly in view); empty
  when the midline cannot be found or the clot's side is not the same for every plane
  the image allows. Without a CTA the midline is the head's outline on the NCCT.
* ``qc_score``: the review score of this component (0 = trustworthy, 1 = review; see
  :mod:`clotseg.inference.qc`), filled in by ``predict``; NaN when measuring a mask
  without the prediction's probability map.
* ``inputs``: the scans measured (and predicted from): ``cta+ncct``, ``cta`` or
  ``ncct``. Last column, so readers by position keep working.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from clotseg.errors import ClotsegError
from clotseg.io.tables import csv_text, write_csv
from clotseg.io.volume import Volume
from clotseg.masks import bounding_box, component_labels
from clotseg.measure.centreline import centreline_length_mm
from clotseg.measure.midline import Midline, estimate_midline, head_midline_x
from clotseg.measure.side import side_of

#: Perviousness threshold: pervious when CTA − NCCT ≥ 10.9 HU (Santos 2016, Stroke).
PERVIOUS_HU = 10.9
#: How far (mm) around the mirrored position the contralateral artery is looked for.
CONTRA_SEARCH_MM = 3.0

CLOTS_CSV_COLUMNS = ["case_id", "component", "n_components", "volume_mm3", "length_mm",
                     "ncct_mean_hu", "ncct_median_hu", "cta_mean_hu", "perviousness_hu",
                     "pervious", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
                     "max_prob", "contralateral_ncct_mean_hu", "relative_density", "side",
                     "qc_score", "inputs"]

NAN = float("nan")


def measure_case(case_id: str, mask: Volume, cta: Volume | None, ncct: Volume | None,
                 prob: np.ndarray | None = None) -> list[dict]:
    """Measure every clot component of ``mask``; all three volumes on the CTA grid and
    ``prob`` (optional probability map) of the same shape.

    Args:
        case_id: the ``case_id`` of every row.
        mask: the clot mask (non-zero = clot).
        cta, ncct: the scans on the mask's grid; either (not both) may be None for a
            one-modality case, whose values needing it are then NaN (module docstring).
        prob: the probability map, or None.

    Examples:
        >>> import numpy as np
        >>> v = Volume(np.zeros((4, 4, 4), np.int16), (1.0, 1.0, 1.0))
        >>> m = v.with_array(np.pad(np.ones((2, 2, 2), np.uint8), 1))
        >>> row = measure_case("c", m, None, v)[0]
        >>> row["inputs"], math.isnan(row["perviousness_hu"])
        ('ncct', True)
    """
    ref = _reference(case_id, cta, ncct)
    _check_grids(case_id, mask, ref, cta, ncct, prob)
    inputs = inputs_text(cta, ncct)
    # Components are labelled inside the mask's bounding box only (a clinical scan is
    # 100 million voxels, a clot a few hundred); ``offset`` maps back to the full grid.
    any_clot = np.asarray(mask.array) > 0
    bbox = bounding_box(any_clot)
    if bbox is None:
        return [_empty_row(case_id, prob, inputs)]
    offset = np.array([s.start for s in bbox])
    labels, n = component_labels(any_clot[bbox])  # numbered largest first
    # the CTA (the NCCT without one) fills its own grid; its arteries when the head does not
    side_midline = estimate_midline(ref, cta)
    midline = _mirror_plane(ncct, side_midline)
    rows = []
    for k, local_box in enumerate(ndimage.find_objects(labels), start=1):
        local = labels[local_box] == k
        box = tuple(slice(s.start + o, s.stop + o) for s, o in zip(local_box, offset))
        index = np.argwhere(local) + [s.start for s in box]
        row = _measure_component(local, _values(cta, box, local), _values(ncct, box, local),
                                 ref)
        centroid = ref.grid.index_to_physical(index.mean(axis=0))[0]
        row.update(centroid_x_mm=float(centroid[0]), centroid_y_mm=float(centroid[1]),
                   centroid_z_mm=float(centroid[2]),
                   max_prob=float(np.asarray(prob)[box][local].max()) if prob is not None
                   else NAN)
        contra = (contralateral_ncct_mean(index, any_clot, cta, ncct, midline)
                  if cta is not None and ncct is not None else NAN)
        row["contralateral_ncct_mean_hu"] = contra
        row["relative_density"] = (row["ncct_mean_hu"] / contra
                                   if math.isfinite(contra) and contra > 0 else NAN)
        row["side"] = side_of(float(centroid[0]), side_midline.range)
        row["qc_score"] = NAN  # predict fills it in (inference computes it)
        row["inputs"] = inputs
        rows.append(row)
    rows.sort(key=lambda r: -r["volume_mm3"])
    for k, row in enumerate(rows, start=1):
        row.update(case_id=case_id, component=k, n_components=n)
    return [{c: row[c] for c in CLOTS_CSV_COLUMNS} for row in rows]


def inputs_text(cta: Volume | None, ncct: Volume | None) -> str:
    """The ``inputs`` cell: the scans present, joined by ``+`` (``cta+ncct``, ``cta``,
    ``ncct``).

    Args:
        cta, ncct: the scans, or None for an absent one.

    Examples:
        >>> inputs_text(None, Volume(np.zeros((1, 1, 1)), (1.0, 1.0, 1.0)))
        'ncct'
    """
    return "+".join(n for n, v in (("cta", cta), ("ncct", ncct)) if v is not None)


def _reference(case_id: str, cta: Volume | None, ncct: Volume | None) -> Volume:
    """The grid-giving scan: the CTA, or the NCCT without one."""
    if cta is None and ncct is None:
        raise ClotsegError(f"case {case_id}: neither a CTA nor an NCCT to measure on")
    return cta if cta is not None else ncct


def _values(vol: Volume | None, box: tuple, local: np.ndarray) -> np.ndarray | None:
    """HU of ``vol`` at the component's voxels (None without the scan)."""
    return None if vol is None else np.asarray(vol.array[box][local], dtype=np.float64)


def _check_grids(case_id: str, mask: Volume, cta: Volume, ct: Volume | None,
                 ncct: Volume | None, prob: np.ndarray | None) -> None:
    """Mask, scans and probability all on the reference grid ``cta``."""
    for name, vol in (("CTA", ct), ("NCCT", ncct), ("mask", mask)):
        if vol is not None and not vol.grid.same_as(cta.grid):
            raise ClotsegError(f"case {case_id}: {name} is not on the CTA grid "
                               f"({'; '.join(vol.grid.differences(cta.grid))}); clots are "
                               "measured on the CTA grid")
    if prob is not None and tuple(np.shape(prob)) != cta.shape:
        raise ClotsegError(f"case {case_id}: probability map shape {tuple(np.shape(prob))} "
                           f"differs from the CTA {cta.shape}")


def _measure_component(local: np.ndarray, cta_hu: np.ndarray | None,
                       ncct_hu: np.ndarray | None, grid_of: Volume) -> dict:
    """Size and densities of one component; a density of an absent scan is NaN, and so is
    perviousness (``pervious`` None), which needs both."""
    cta_mean = NAN if cta_hu is None else float(cta_hu.mean())
    ncct_mean = NAN if ncct_hu is None else float(ncct_hu.mean())
    delta = cta_mean - ncct_mean
    return {
        "volume_mm3": float(local.sum() * grid_of.voxel_volume),
        "length_mm": centreline_length_mm(local, grid_of.spacing),
        "ncct_mean_hu": ncct_mean,
        "ncct_median_hu": NAN if ncct_hu is None else float(np.median(ncct_hu)),
        "cta_mean_hu": cta_mean, "perviousness_hu": delta,
        "pervious": bool(delta >= PERVIOUS_HU) if math.isfinite(delta) else None,
    }


def _empty_row(case_id: str, prob: np.ndarray | None, inputs: str = "cta+ncct") -> dict:
    row = dict.fromkeys(CLOTS_CSV_COLUMNS, NAN)
    row.update(case_id=case_id, component=0, n_components=0, volume_mm3=0.0, length_mm=0.0,
               pervious=None, side=None, inputs=inputs,
               max_prob=float(np.max(prob)) if prob is not None and np.size(prob) else NAN)
    return row


def _mirror_plane(ncct: Volume | None, midline: Midline) -> float:
    """The plane to mirror a clot across for its contralateral NCCT: the head's outline
    on the NCCT, else the arteries' mirror plane when it is known to within
    :data:`CONTRA_SEARCH_MM` (the search around the mirror image absorbs the rest)."""
    if ncct is None:
        return NAN
    x = head_midline_x(ncct)
    if math.isfinite(x) or midline.source != "vessels":
        return x
    return (midline.low + midline.high) / 2 if midline.high - midline.low <= CONTRA_SEARCH_MM \
        else NAN


def contralateral_ncct_mean(index: np.ndarray, clot: np.ndarray, cta: Volume, ncct: Volume,
                            midline_x: float) -> float:
    """Mean NCCT HU at the clot's mirror image across the mid-sagittal plane.

    The clot's voxels are reflected across the plane x = ``midline_x`` (LPS) — the
    mirroring assumption: the arteries of both hemispheres are symmetric about that plane.
    Because real anatomy and head position are never exactly symmetric, the mirrored
    region is then moved by up to ±3 mm to where the CTA is brightest (trimmed mean), i.e.
    onto the contrast-filled contralateral artery, and the NCCT is read there (linear
    interpolation). NaN when the mirror image leaves the scan or overlaps the clot.
    """
    if not math.isfinite(midline_x):
        return NAN
    points = cta.grid.index_to_physical(index)
    mirrored = points.copy()
    mirrored[:, 0] = 2.0 * midline_x - points[:, 0]
    base = cta.grid.physical_to_index(mirrored)
    inside = np.all((base > -0.5) & (base < np.asarray(cta.shape) - 0.5), axis=1)
    if inside.mean() < 0.9:
        return NAN
    nearest = np.clip(np.round(base).astype(int), 0, np.asarray(cta.shape) - 1)
    if clot[tuple(nearest.T)].mean() > 0.5:  # a midline clot mirrors onto itself
        return NAN
    # Work in a crop around the mirrored region: never copy the whole scan.
    to_index = np.linalg.inv(cta.grid.affine[:3, :3])
    reach = np.abs(to_index).sum(axis=1) * CONTRA_SEARCH_MM + 2
    lo = np.maximum(np.floor(base.min(axis=0) - reach), 0).astype(int)
    hi = np.minimum(np.ceil(base.max(axis=0) + reach) + 1, cta.shape).astype(int)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    local = base - lo
    shift = _brightest_shift(local, np.asarray(cta.array[crop], dtype=np.float32), to_index)
    values = ndimage.map_coordinates(np.asarray(ncct.array[crop], dtype=np.float32),
                                     (local + shift).T, order=1, mode="nearest")
    return float(values.mean())


def _brightest_shift(points: np.ndarray, cta: np.ndarray, to_index: np.ndarray) -> np.ndarray:
    """Index offset (a shift of up to ±CONTRA_SEARCH_MM per patient axis, 1 mm steps)
    that maximises the CTA HU at ``points`` (continuous indices into ``cta``): their mean
    without the top and bottom 10 %, so that a small calcification does not attract the
    region; smaller shifts are tried first and win ties (uniform regions)."""
    from scipy.stats import trim_mean

    steps = np.arange(-CONTRA_SEARCH_MM, CONTRA_SEARCH_MM + 0.5, 1.0)
    best, best_score = np.zeros(3), -np.inf
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    for mm in grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")]:
        shift = to_index @ mm
        vals = ndimage.map_coordinates(cta, (points + shift).T, order=1, mode="nearest")
        score = float(trim_mean(vals, 0.1))
        if score > best_score + 1e-6:
            best, best_score = shift, score
    return best


def clots_csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """CSV text of measurement rows (columns :data:`CLOTS_CSV_COLUMNS` unless given), in
    the cell format of :func:`clotseg.io.tables.format_cell`."""
    return csv_text(rows, columns or CLOTS_CSV_COLUMNS)


def write_clots_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write ``clots.csv`` atomically (columns :data:`CLOTS_CSV_COLUMNS`)."""
    return write_csv(path, rows, CLOTS_CSV_COLUMNS)


def unname_sides(rows: list[dict]) -> list[dict]:
    """``rows`` with what rests on the patient's left-right axis emptied (``side``, the
    contralateral density and the density relative to it): for scans whose files do not
    say how they lie in the patient, where naming a side would be a guess."""
    blank = {"side": None, "contralateral_ncct_mean_hu": NAN, "relative_density": NAN}
    for row in rows:
        row.update({k: v for k, v in blank.items() if k in row})
    return rows

