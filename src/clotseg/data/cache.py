"""A memory-mapped cache of prepared cases, so host RAM does not grow with the cohort.

Each case is read from its files once, normalised and reoriented
(:func:`clotseg.data.slabs.prepare_case`) and stored slice-major, so that one training
slab is one contiguous read:

* ``<case>.image.npy`` float16 ``(Z, 2, X, Y)`` (channel 0 CTA, 1 NCCT, canonical L-P-S),
* ``<case>.mask.npy`` uint8 ``(Z, X, Y)``,
* ``<case>.json``: spacing, shape, the bounding box of the clot on every clot slice (for
  clot-centred crops without scanning masks) and a key of the source files and windows;
  an entry whose key no longer matches is rebuilt.

Training maps the arrays with ``np.load(mmap_mode="r")``: pages come from the OS page cache
on demand instead of all volumes living in process memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clotseg.data.slabs import prepare_case
from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path, write_text
from clotseg.io.layouts import CaseRef

CACHE_VERSION = 2


@dataclass
class CachedCase:
    """One prepared case, memory-mapped. Slice-major arrays plus canonical views."""

    case_id: str
    slices: np.ndarray  # (Z, 2, X, Y) float16 memmap
    mask_slices: np.ndarray  # (Z, X, Y) uint8 memmap
    spacing: tuple[float, ...]  # canonical (X, Y, Z) order, mm
    clot_boxes: np.ndarray  # (n, 5) int: z, x0, x1, y0, y1 (end exclusive) per clot slice

    @property
    def depth(self) -> int:
        return int(self.slices.shape[0])

    @property
    def plane(self) -> tuple[int, int]:
        return int(self.slices.shape[2]), int(self.slices.shape[3])

    @property
    def image(self) -> np.ndarray:
        """Canonical ``(2, X, Y, Z)`` view (no copy), as :mod:`clotseg.inference` expects."""
        return self.slices.transpose(1, 2, 3, 0)

    @property
    def mask(self) -> np.ndarray:
        """Canonical ``(X, Y, Z)`` view (no copy)."""
        return self.mask_slices.transpose(1, 2, 0)

    @property
    def clot_slices(self) -> np.ndarray:
        return self.clot_boxes[:, 0].copy()


def _key(case: CaseRef, windows: dict, resample: dict | None = None) -> str:
    parts = [str(CACHE_VERSION), json.dumps(windows, sort_keys=True),
             json.dumps(resample, sort_keys=True)]
    for name, p in sorted(case.files.items()):
        st = p.stat()
        parts.append(f"{name}={p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def clot_boxes(mask_slices: np.ndarray) -> np.ndarray:
    """Per slice with clot: ``[z, x0, x1, y0, y1]`` bounding box (end exclusive)."""
    rows = []
    for z in np.flatnonzero(mask_slices.reshape(mask_slices.shape[0], -1).any(axis=1)):
        xs = np.flatnonzero(mask_slices[z].any(axis=1))
        ys = np.flatnonzero(mask_slices[z].any(axis=0))
        rows.append([int(z), int(xs[0]), int(xs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def _settings_dict(resample: Any) -> dict | None:
    """Preprocessing settings as their JSON dict (the cache key hashes that form), from a
    dict or a :class:`~clotseg.preprocess.settings.PreprocessSettings`."""
    return resample.to_dict() if hasattr(resample, "to_dict") else resample


def _prepare(case: CaseRef, windows: dict, resample: dict | None = None):
    vols = case.load()
    files = ", ".join(f"{k}: {v}" for k, v in case.files.items())
    if vols.cta is None or vols.ncct is None:  # modality dropout makes missing inputs
        gone = "CTA" if vols.cta is None else "NCCT"
        raise ClotsegError(f"case {case.case_id}: no {gone}; a training case needs both a "
                           f"CTA and an NCCT ({files}); `predict` takes one-modality cases")
    if vols.mask is None:
        raise ClotsegError(f"case {case.case_id}: no clot mask; training needs one ({files})")
    if resample:  # the preprocessing predict repeats (e.g. one voxel size for all cases)
        from clotseg.preprocess.pipeline import PreprocessSettings, preprocess_case

        pre = preprocess_case(vols.cta, vols.ncct, vols.mask,
                              PreprocessSettings.from_dict(resample))
        vols = type(vols)(vols.case_id, pre.cta, pre.ncct, pre.mask)
    try:
        prep = prepare_case(case.case_id, vols.cta, vols.ncct, vols.mask,
                            {k: tuple(v) for k, v in windows.items()})
    except ValueError as exc:  # grids differ: tell the user which files and what to do
        raise ClotsegError(f"{exc} [{files}]") from None
    if not np.isfinite(prep.image).all():
        raise ClotsegError(f"case {case.case_id}: non-finite voxel values (NaN/inf) in "
                           f"{case.cta} or {case.ncct}; run `clotseg check`")
    return prep


def cache_case(case: CaseRef, cache_dir: Path, windows: dict, resample: Any = None
               ) -> CachedCase:
    """Prepare one case into the cache (skipped when an up-to-date entry exists);
    ``resample``: preprocessing settings applied first (see ``data.target_spacing``), as
    a dict or typed (``ModelSpec.preprocess``)."""
    resample = _settings_dict(resample)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = cache_dir / case.case_id
    meta_path = Path(f"{base}.json")
    key = _key(case, windows, resample)
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key:
                return _open(case.case_id, base, meta)
        except (OSError, ValueError):  # damaged entry: rebuild it
            pass
    prep = _prepare(case, windows, resample)
    slices = np.ascontiguousarray(prep.image.transpose(3, 0, 1, 2), dtype=np.float16)
    masks = np.ascontiguousarray(prep.mask.transpose(2, 0, 1))
    for suffix, arr in ((".image.npy", slices), (".mask.npy", masks)):
        with atomic_path(f"{base}{suffix}") as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    meta = {"key": key, "version": CACHE_VERSION, "spacing": [float(s) for s in prep.spacing],
            "shape": list(prep.mask.shape), "clot_boxes": clot_boxes(masks).tolist()}
    write_text(meta_path, json.dumps(meta))  # written last: marks the entry complete
    return _open(case.case_id, base, meta)


def _open(case_id: str, base: Path, meta: dict) -> CachedCase:
    return CachedCase(case_id, np.load(f"{base}.image.npy", mmap_mode="r"),
                      np.load(f"{base}.mask.npy", mmap_mode="r"), tuple(meta["spacing"]),
                      np.asarray(meta["clot_boxes"], dtype=np.int64).reshape(-1, 5))


def build_cache(cases: list[CaseRef], cache_dir: Path, windows: dict,
                progress: bool = True, resample: Any = None) -> list[CachedCase]:
    """Cache every case (reading each source file at most once) and map them."""
    it = cases
    if progress:
        from tqdm import tqdm

        it = tqdm(cases, desc="caching", unit="case", leave=False)
    return [cache_case(c, cache_dir, windows, resample) for c in it]
