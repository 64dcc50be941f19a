"""Per-clot measurements written to ``clots.csv`` (DESIGN §9).

One row per 26-connected component of the predicted mask; a case without any clot gets
one row with ``component`` 0, ``n_components`` 0 and empty measurements, so every case
appears in the table. All values are measured on the original CTA grid.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.inference.postprocess import components
from clotseg.io.atomic import write_text
from clotseg.io.volume import Volume
from clotseg.measure.centreline import centreline_length_mm

#: Perviousness threshold: pervious when CTA − NCCT ≥ 10.9 HU (Santos 2016, Stroke).
PERVIOUS_HU = 10.9

CLOTS_CSV_COLUMNS = ["case_id", "component", "n_components", "volume_mm3", "length_mm",
                     "ncct_mean_hu", "ncct_median_hu", "cta_mean_hu", "perviousness_hu",
                     "pervious", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
                     "max_prob"]


def measure_case(case_id: str, mask: Volume, cta: Volume, ncct: Volume,
                 prob: np.ndarray | None = None) -> list[dict]:
    """Measure every clot component of ``mask`` (all three volumes on one grid)."""
    for name, vol in (("NCCT", ncct), ("mask", mask)):
        if not vol.grid.same_as(cta.grid):
            raise ClotsegError(f"case {case_id}: {name} is not on the CTA grid "
                               f"({'; '.join(vol.grid.differences(cta.grid))})")
    labels, n = components(np.asarray(mask.array) > 0)
    if n == 0:
        row = dict.fromkeys(CLOTS_CSV_COLUMNS, "")
        row.update(case_id=case_id, component=0, n_components=0, volume_mm3=0.0)
        return [row]
    rows = []
    cta_a = np.asarray(cta.array, dtype=np.float64)
    ncct_a = np.asarray(ncct.array, dtype=np.float64)
    for k, sl in enumerate(_objects(labels), start=1):
        m = labels[sl] == k
        idx = np.argwhere(m) + [s.start for s in sl]
        c_mean, n_mean = float(cta_a[sl][m].mean()), float(ncct_a[sl][m].mean())
        centroid = cta.grid.index_to_physical(idx.mean(axis=0))[0]
        rows.append({
            "case_id": case_id, "component": k, "n_components": n,
            "volume_mm3": float(m.sum() * cta.voxel_volume),
            "length_mm": centreline_length_mm(m, cta.spacing),
            "ncct_mean_hu": n_mean, "ncct_median_hu": float(np.median(ncct_a[sl][m])),
            "cta_mean_hu": c_mean, "perviousness_hu": c_mean - n_mean,
            "pervious": bool(c_mean - n_mean >= PERVIOUS_HU),
            "centroid_x_mm": float(centroid[0]), "centroid_y_mm": float(centroid[1]),
            "centroid_z_mm": float(centroid[2]),
            "max_prob": float(prob[sl][m].max()) if prob is not None else "",
        })
    rows.sort(key=lambda r: -r["volume_mm3"])
    for k, r in enumerate(rows, start=1):
        r["component"] = k  # largest clot first
    return rows


def _objects(labels: np.ndarray):
    from scipy import ndimage

    return ndimage.find_objects(labels)


def write_clots_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write measurement rows atomically (floats with 4 significant decimals)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CLOTS_CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return write_text(path, buf.getvalue())
