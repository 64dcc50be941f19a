"""A memory-mapped cache of prepared cases, so host RAM does not grow with the cohort.

Each case is read from its files once, normalised and reoriented
(:func:`clotseg.data.slabs.prepare_case`), and stored as ``<case>.image.npy`` (float16,
(2, X, Y, Z)) and ``<case>.mask.npy`` (uint8) plus a small JSON with its spacing. Training
then maps the arrays with ``np.load(mmap_mode="r")``: pages come from the OS page cache on
demand instead of all volumes being held in process memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clotseg.data.slabs import prepare_case
from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path, write_text
from clotseg.io.layouts import CaseRef


@dataclass
class CachedCase:
    case_id: str
    image: np.ndarray  # (2, X, Y, Z) float16 memmap
    mask: np.ndarray  # (X, Y, Z) uint8 memmap
    spacing: tuple[float, ...]  # canonical order

    @property
    def clot_slices(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.mask).any(axis=(0, 1)))


def _key(case: CaseRef, windows: dict) -> str:
    parts = [json.dumps(windows, sort_keys=True)]
    for p in case.files.values():
        st = p.stat()
        parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def cache_case(case: CaseRef, cache_dir: Path, windows: dict) -> CachedCase:
    """Prepare one case into the cache (skipped when an up-to-date entry exists)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = cache_dir / case.case_id
    meta_path = Path(f"{base}.json")
    key = _key(case, windows)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            return _open(case.case_id, base, meta)
    vols = case.load()
    if vols.mask is None:
        raise ClotsegError(f"case {case.case_id}: no clot mask (training needs clot.* in "
                           f"{case.cta.parent if case.cta else case.case_id})")
    try:
        prep = prepare_case(case.case_id, vols.cta, vols.ncct, vols.mask, windows)
    except ValueError as exc:
        raise ClotsegError(str(exc)) from None
    for suffix, arr in ((".image.npy", prep.image.astype(np.float16)), (".mask.npy", prep.mask)):
        with atomic_path(f"{base}{suffix}") as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    meta = {"key": key, "spacing": list(prep.spacing)}
    write_text(meta_path, json.dumps(meta))
    return _open(case.case_id, base, meta)


def _open(case_id: str, base: Path, meta: dict) -> CachedCase:
    return CachedCase(case_id, np.load(f"{base}.image.npy", mmap_mode="r"),
                      np.load(f"{base}.mask.npy", mmap_mode="r"), tuple(meta["spacing"]))


def build_cache(cases: list[CaseRef], cache_dir: Path, windows: dict,
                progress: bool = True) -> list[CachedCase]:
    it = cases
    if progress:
        from tqdm import tqdm

        it = tqdm(cases, desc="caching", unit="case", leave=False)
    return [cache_case(c, cache_dir, windows) for c in it]
