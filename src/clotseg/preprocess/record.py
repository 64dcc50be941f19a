"""What preprocessing did to one case, and its inverse: :class:`PreprocessRecord`.

The record travels with the processed volumes (the shape of an invertible transform: what
was applied is kept so that it can be undone). It is written as ``OUT/<case>/
preprocess.json`` by ``clotseg preprocess`` and rebuilt in memory by ``clotseg predict``,
and it maps a mask or probability from the processed grid back onto *exactly* the
original CTA grid (:meth:`PreprocessRecord.restore_mask`,
:meth:`PreprocessRecord.restore_prob`).

The JSON form is the ``preprocess.json`` written before this class existed, key for key
(:meth:`PreprocessRecord.to_dict`); records lacking keys that are not needed to map back
(an older file) still load, and keys this class does not know are kept and written back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clotseg.errors import ClotsegError, UsageError
from clotseg.io.volume import Grid, Volume
from clotseg.preprocess.resample import grid_from_dict, grid_to_dict, resample_to_grid
from clotseg.preprocess.roi import Box, crop_grid, uncrop
from clotseg.preprocess.settings import PreprocessSettings

INFO_FORMAT = 1
#: JSON keys in the order they are written (the fields of :class:`PreprocessRecord`).
KEYS = ("format", "settings", "original_grid", "ncct_original_grid", "resampled_grid",
        "resampled", "crop_box", "crop_box_original", "grid", "roi_centre_mm",
        "registration", "ncct_coverage", "mask", "warnings", "case_id", "source")
_GRIDS = ("original_grid", "ncct_original_grid", "resampled_grid", "grid")
_BOXES = ("crop_box", "crop_box_original")


def box_on_grid(box: Box, grid: Grid, target: Grid) -> Box:
    """The smallest box of ``target`` covering ``box`` of ``grid`` (voxel edges included)."""
    lo = np.asarray(box.start, float) - 0.5
    hi = np.asarray(box.stop, float) - 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])
    idx = target.physical_to_index(grid.index_to_physical(corners))
    start = np.floor(idx.min(0) + 0.5 + 1e-6).astype(int)
    stop = np.ceil(idx.max(0) + 0.5 - 1e-6).astype(int)
    shape = np.asarray(target.shape)
    start = np.clip(start, 0, shape - 1)
    stop = np.clip(np.maximum(stop, start + 1), 1, shape)
    return Box(tuple(start), tuple(stop))


@dataclass(frozen=True)
class PreprocessRecord:
    """The preprocessing of one case: grids, crop boxes, NCCT registration, notes.

    ``original_grid`` is the CTA's grid; ``resampled_grid`` the same box at the requested
    spacing; ``crop_box`` the ROI on ``resampled_grid`` (``crop_box_original`` on the CTA
    grid); ``grid`` the processed (final) grid. ``resampled`` is False when the processed
    grid is an exact crop of the CTA grid. ``registration`` is the JSON summary of
    :class:`clotseg.preprocess.register.RegistrationResult` (None without registration).
    Fields an older record lacks are None (``format``, ``original_grid`` and ``grid``
    are always required); ``extra`` holds keys this class does not know.

    Examples:
        >>> import numpy as np
        >>> from clotseg.io.volume import Volume
        >>> from clotseg.preprocess.pipeline import PreprocessSettings, preprocess_case
        >>> cta = Volume(np.zeros((8, 8, 8), np.int16), (1.0, 1.0, 1.0))
        >>> pc = preprocess_case(cta, cta, None, PreprocessSettings(register=False,
        ...                      roi="none", spacing=(2.0, 2.0, 2.0)))
        >>> rec = PreprocessRecord.from_json(pc.record.to_json())
        >>> rec == pc.record, rec.grid.shape
        (True, (4, 4, 4))
        >>> rec.restore_mask(pc.cta.with_array(np.ones((4, 4, 4), np.uint8))).shape
        (8, 8, 8)
    """

    original_grid: Grid
    grid: Grid
    settings: PreprocessSettings | None = None
    ncct_original_grid: Grid | None = None
    resampled_grid: Grid | None = None
    resampled: bool = True
    crop_box: Box | None = None
    crop_box_original: Box | None = None
    roi_centre_mm: tuple[float, ...] | None = None
    registration: dict | None = None
    ncct_coverage: float | None = None
    mask: dict | None = None
    warnings: tuple[str, ...] | None = None
    case_id: str | None = None
    source: dict[str, str] | None = None
    format: int = INFO_FORMAT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # --- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The ``preprocess.json`` object: :data:`KEYS` in order (fields that are None are
        left out, except ``registration``, written as null), then ``extra``."""
        out: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key)
            if value is None and key != "registration":
                continue
            out[key] = _json_value(key, value)
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), indent=2)``: the file ``preprocess`` writes."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessRecord:
        """Inverse of :meth:`to_dict`; a :class:`ClotsegError` when ``data`` is no record
        of a format this version reads."""
        if not isinstance(data, dict):
            raise ClotsegError(f"not a preprocessing record (a JSON {type(data).__name__})")
        if int(data.get("format", 0)) != INFO_FORMAT:
            raise ClotsegError(f"unsupported preprocess info format {data.get('format')!r}")
        try:
            kw = {k: _from_json_value(k, data[k]) for k in KEYS if k in data}
            kw["resampled"] = bool(data.get("resampled", True))
            return cls(**kw, extra={k: v for k, v in data.items() if k not in KEYS})
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise ClotsegError(f"invalid preprocessing record ({exc})") from None

    @classmethod
    def from_json(cls, text: str) -> PreprocessRecord:
        """Parse ``preprocess.json`` text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ClotsegError(f"invalid preprocessing record ({exc})") from None
        return cls.from_dict(data)

    def with_source(self, case_id: str, source: dict[str, str]) -> PreprocessRecord:
        """This record naming the case and its input files (as ``preprocess`` writes it)."""
        return dataclasses.replace(self, case_id=case_id, source=dict(source))

    # --- what was applied ---------------------------------------------------------------
    @property
    def transform(self) -> Any:
        """The NCCT registration (SimpleITK transform mapping CTA points to NCCT points), or
        None when the NCCT was not registered."""
        from clotseg.preprocess.transforms import transform_from_dict

        reg = self.registration or {}
        return None if reg.get("transform") is None else transform_from_dict(reg["transform"])

    @property
    def is_exact_crop(self) -> bool:
        """The processed grid is a box of the CTA grid (nothing was resampled)."""
        return not self.resampled

    # --- the inverse --------------------------------------------------------------------
    def restore_mask(self, vol: Volume) -> Volume:
        """A uint8 mask on exactly the original CTA grid (uncrop, then label-aware
        resample) from a mask on the processed grid."""
        binary = vol.with_array((np.asarray(vol.array) > 0).astype(np.uint8))
        out = self._restore(binary, "label", 0)
        return out.with_array(np.asarray(out.array).astype(np.uint8))

    def restore_prob(self, vol: Volume, fill: float = 0.0) -> Volume:
        """A float32 map (e.g. clot probability) on exactly the original CTA grid (linear
        interpolation; ``fill`` outside the processed box)."""
        arr = vol.with_array(np.asarray(vol.array, dtype=np.float32))
        return self._restore(arr, "linear", float(fill))

    def restore_prob_part(self, array: np.ndarray, box: Box) -> tuple[Box, np.ndarray]:
        """:meth:`restore_prob` of a map that is zero outside ``box`` of the processed
        grid, given only inside it: the box of the original CTA grid it covers and the
        (linearly interpolated) values there; outside that box the restored map is 0. The
        result equals :meth:`restore_prob` of the full map inside the returned box, at a
        cost and memory that scale with the box, not the scan."""
        original = self.original_grid
        if not self.resampled:
            start = tuple(a + b for a, b in zip(self.crop_box.start, box.start))
            return Box(start, tuple(a + n for a, n in zip(start, box.size))), \
                np.asarray(array, dtype=np.float32)
        # One voxel of margin: linear interpolation reads the zeros just outside the box.
        grown = Box(tuple(max(a - 1, 0) for a in box.start),
                    tuple(min(b + 1, n) for b, n in zip(box.stop, self.grid.shape)))
        padded = np.zeros(grown.size, dtype=np.float32)
        padded[tuple(slice(a - g, b - g) for a, b, g in
                     zip(box.start, box.stop, grown.start))] = array
        target = box_on_grid(grown, self.grid, original)
        part = resample_to_grid(Volume.on_grid(padded, crop_grid(self.grid, grown)),
                                crop_grid(original, target), interpolation="linear",
                                default_value=0.0)
        return target, np.asarray(part.array, dtype=np.float32)

    def _restore(self, vol: Volume, interpolation: str, fill: float) -> Volume:
        if not vol.grid.same_as(self.grid):
            raise ClotsegError("volume is not on the processed grid of this case ("
                               + "; ".join(vol.grid.differences(self.grid)) + ")")
        original = self.original_grid
        if not self.resampled:
            box = self.crop_box
            out = uncrop(Volume.on_grid(np.asarray(vol.array), crop_grid(original, box)), box,
                         original, fill=fill)
        else:
            # Resample only onto the part of the original grid that the processed box
            # covers, then place it (the rest is outside the ROI: ``fill``). Equivalent to
            # uncropping onto the resampled grid and resampling all of it, at a fraction of
            # the cost.
            box = box_on_grid(Box.full(self.grid.shape), self.grid, original)
            part = resample_to_grid(vol, crop_grid(original, box), interpolation=interpolation,
                                    default_value=fill)
            out = uncrop(part, box, original, fill=fill)
        if not out.grid.same_as(original, atol_mm=1e-6):  # geometry is the contract
            raise ClotsegError("internal error: restored volume is not on the original CTA "
                               "grid")
        return Volume.on_grid(np.asarray(out.array), original)


def _json_value(key: str, value: Any) -> Any:
    if key in _GRIDS:
        return grid_to_dict(value)
    if key in _BOXES:
        return value.to_dict()
    if key == "settings":
        return value.to_dict()
    if key in ("roi_centre_mm", "warnings"):
        return list(value)
    return value


def _from_json_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _GRIDS:
        return grid_from_dict(value)
    if key in _BOXES:
        return Box.from_dict(value)
    if key == "settings":
        return PreprocessSettings.from_dict(value)
    if key in ("roi_centre_mm", "warnings"):
        return tuple(value)
    return value
