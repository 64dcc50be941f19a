"""PreprocessRecord: the same JSON as ``preprocess.json`` has always held, and its inverse
puts masks back on the original CTA grid voxel for voxel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.errors import ClotsegError
from clotseg.preprocess.pipeline import (
    PreprocessRecord,
    PreprocessSettings,
    preprocess_case,
    restore_prediction,
)
from clotseg.preprocess.resample import grid_to_dict
from clotseg.preprocess.roi import Box
from tests.helpers import DIRECTIONS
from tests.preprocess import COW_CENTRE, make_grid, make_head
from tests.preprocess.test_pipeline import blob, dice


def _old_info(pc, cta, ncct, settings) -> dict:
    """The record as ``preprocess_case`` built it by hand before PreprocessRecord, plus
    what ``preprocess_dataset`` appended (key order included)."""
    r = pc.record
    return json.loads(json.dumps({
        "format": 1, "settings": settings.to_dict(), "original_grid": grid_to_dict(cta.grid),
        "ncct_original_grid": grid_to_dict(ncct.grid),
        "resampled_grid": grid_to_dict(r.resampled_grid), "resampled": r.resampled,
        "crop_box": r.crop_box.to_dict(), "crop_box_original": r.crop_box_original.to_dict(),
        "grid": grid_to_dict(pc.cta.grid), "roi_centre_mm": list(r.roi_centre_mm),
        "registration": None, "ncct_coverage": r.ncct_coverage, "mask": r.mask,
        "warnings": list(r.warnings), "case_id": "p0", "source": {"cta": "p0/cta.nii.gz"}}))


@pytest.fixture(scope="module")
def flipped_head():
    grid = make_grid(shape=(60, 70, 34), spacing=(2.0, 2.2, 3.5),
                     direction=DIRECTIONS["ras_flip"] @ DIRECTIONS["oblique"])
    cta, ncct, _ = make_head(grid, seed=5)
    mask = cta.with_array(blob(cta.grid, COW_CENTRE + [18.0, 0.0, 3.0], (8.0, 5.0, 6.0)))
    return cta, ncct, mask


def test_json_round_trip_and_old_records(flipped_head):
    cta, ncct, mask = flipped_head
    settings = PreprocessSettings(register=False, spacing=(1.5, 1.5, 2.5), roi_size_mm=70.0)
    pc = preprocess_case(cta, ncct, mask, settings)
    rec = pc.record.with_source("p0", {"cta": "p0/cta.nii.gz"})
    assert PreprocessRecord.from_json(rec.to_json()) == rec
    old = _old_info(pc, cta, ncct, settings)
    assert rec.to_dict() == old and list(rec.to_dict()) == list(old)  # same keys, same order
    assert rec.to_json() == json.dumps(old, indent=2)  # the file, byte for byte
    assert PreprocessRecord.from_dict(old).to_dict() == old
    # An older, sparser record still maps back; unknown keys survive a round trip.
    sparse = {k: old[k] for k in ("format", "original_grid", "grid", "crop_box")}
    sparse["origin_note"] = "kept"
    back = PreprocessRecord.from_dict(sparse)
    assert back.resampled and back.settings is None and back.to_dict()["origin_note"] == "kept"
    assert back.restore_mask(pc.mask).grid.same_as(cta.grid)
    with pytest.raises(ClotsegError, match="format"):
        PreprocessRecord.from_dict({**old, "format": 99})


@pytest.mark.parametrize("spacing", [None, (1.5, 1.5, 2.5)])
def test_restore_mask_is_on_the_original_grid_voxel_for_voxel(flipped_head, spacing):
    cta, ncct, mask = flipped_head
    pc = preprocess_case(cta, ncct, mask, PreprocessSettings(register=False, spacing=spacing,
                                                             roi_size_mm=70.0))
    assert max(np.asarray(pc.cta.shape) * pc.cta.spacing) < 80.0  # cropped
    rec = PreprocessRecord.from_json(pc.record.to_json())
    back = rec.restore_mask(pc.mask)
    assert back.shape == cta.shape and back.spacing == cta.spacing
    assert back.origin == cta.origin and back.direction == cta.direction
    assert back.array.dtype == np.uint8
    if spacing is None:  # an exact crop: every voxel back where it was
        np.testing.assert_array_equal(back.array, mask.array)
    else:
        assert dice(back.array, mask.array) > 0.85
    np.testing.assert_array_equal(back.array, restore_prediction(pc.mask, pc.info).array)
    prob = rec.restore_prob(pc.mask.with_array(pc.mask.array * np.float32(0.5)), fill=0.0)
    assert prob.grid.same_as(cta.grid) and prob.array.dtype == np.float32
    assert prob.array.max() <= 0.5 + 1e-6


@pytest.mark.parametrize("spacing", [None, (1.5, 1.5, 2.5)])
def test_restoring_part_of_a_map_equals_the_full_restore_inside_its_box(flipped_head, spacing):
    """A map that is zero outside a box of the processed grid, restored from that box
    alone, equals the full restore inside the box it returns on the CTA grid, and the
    full restore is zero outside it: geometry holds for the part too (oblique, flipped,
    resampled or an exact crop)."""
    cta, ncct, mask = flipped_head
    pc = preprocess_case(cta, ncct, mask, PreprocessSettings(register=False, spacing=spacing,
                                                             roi_size_mm=70.0))
    rec = pc.record
    part = Box((5, 7, 3), (14, 12, 9))
    values = np.random.default_rng(0).uniform(0.2, 1.0, part.size).astype(np.float32)
    full = np.zeros(pc.cta.shape, np.float32)
    full[part.slices] = values
    whole = np.asarray(rec.restore_prob(pc.cta.with_array(full)).array)
    box, got = rec.restore_prob_part(values, part)
    assert got.shape == box.size and all(b <= n for b, n in zip(box.stop, cta.shape))
    np.testing.assert_allclose(got, whole[box.slices], atol=1e-5)
    outside = whole.copy()
    outside[box.slices] = 0
    assert not outside.any() and got.max() > 0.2
