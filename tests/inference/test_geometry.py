"""Predicted masks line up voxel for voxel with the CTA, whatever its orientation and format.

A known clot is painted into the CTA, written to disk, run through ``clotseg predict`` with
the stub network and read back: the mask must equal the painted one exactly and its file
must carry exactly the CTA's grid.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.errors import ClotsegError
from clotseg.io.ongrid import file_grid, write_on_grid
from clotseg.io.readers import read_volume
from clotseg.io.volume import Volume
from tests.helpers import DIRECTIONS
from tests.inference.conftest import case_volumes, paint_mask, write_case, write_run

FORMATS = (".nii.gz", ".nrrd", ".mha")
SHAPE = (16, 14, 10)


def superior_neighbour(mask: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Value of ``mask`` one voxel towards the patient's head, per voxel (computed from the
    direction matrix directly, independently of the code under test)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    axis = int(np.argmax(np.abs(d[2, :])))  # array axis closest to superior
    step = 1 if d[2, axis] > 0 else -1
    return np.roll(mask, -step, axis=axis)


def test_mask_lines_up_for_every_orientation_and_format(tmp_path):
    data = tmp_path / "data"
    painted = paint_mask(SHAPE)
    expected = {}
    for fmt in FORMATS:
        for dname, d in DIRECTIONS.items():
            case_id = f"{dname}_{fmt.strip('.').replace('.', '_')}"
            cta, ncct = case_volumes(painted, d)
            write_case(data / case_id, cta, ncct, fmt)
            # slab 3 and need_above: a voxel is found only when its superior neighbour is
            # painted too, so slabs must run along the patient's S axis, the right way.
            expected[case_id] = painted & superior_neighbour(painted, d)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 6, "need_above": True},
                    slab=3)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(data), str(out), "--device", "cpu",
                 "--quiet"]) == 0
    for case_id, want in expected.items():
        assert want.sum() > 20 and (want != painted).any()
        src = data / case_id
        cta_path = next(src.glob("cta.*"))
        mask = read_volume(out / f"{case_id}.nii.gz")
        cta = read_volume(cta_path)
        assert mask.array.dtype == np.uint8
        assert mask.grid.same_as(cta.grid), (case_id, mask.grid.differences(cta.grid))
        assert file_grid(out / f"{case_id}.nii.gz").same_as(file_grid(cta_path))
        np.testing.assert_array_equal(mask.array, want, err_msg=case_id)
    summary = json.loads((out / "predict.json").read_text())
    assert sorted(summary["ok"]) == sorted(expected) and summary["failed"] == {}
    with open(out / "clots.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["case_id"] for r in rows} == set(expected)


def test_ncct_on_its_own_grid_is_resampled_and_mask_stays_on_cta_grid(tmp_path):
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["oblique"])
    # NCCT with another spacing, origin and direction, covering the CTA.
    # (A ramp of brain-like HU: a constant scan is refused as a blank export.)
    ramp = (30 + np.arange(20 * 20 * 12) % 20).reshape(20, 20, 12).astype(np.int16)
    ncct = Volume(ramp, (0.8, 0.8, 2.0), (-20.0, 20.0, -5.0))
    write_case(tmp_path / "data" / "c1", cta, ncct)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2})
    out = tmp_path / "out"
    assert main(["predict", str(run), str(tmp_path / "data"), str(out), "--quiet"]) == 0
    mask = read_volume(out / "c1.nii.gz")
    assert mask.grid.same_as(read_volume(tmp_path / "data" / "c1" / "cta.nii.gz").grid)
    np.testing.assert_array_equal(mask.array, painted)


def test_misaligned_volume_is_never_written(tmp_path):
    cta, _ = case_volumes(paint_mask(SHAPE), DIRECTIONS["ras_flip"])
    moved = Volume(cta.array.astype(np.uint8), cta.spacing,
                   tuple(np.add(cta.origin, (0.5, 0, 0))), cta.direction)
    target = tmp_path / "m.nii.gz"
    with pytest.raises(ClotsegError, match="origin"):
        write_on_grid(moved, target, cta.grid, mask=True)
    assert not target.exists() and not list(tmp_path.iterdir())
    write_on_grid(cta.with_array(cta.array.astype(np.uint8)), target, cta.grid, mask=True)
    assert file_grid(target).same_as(cta.grid)
