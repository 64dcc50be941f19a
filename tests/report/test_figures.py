"""PNG figures: decodable, expected size, orientation-independent, outlines drawn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clotseg.report.figures import clot_slices_png, mip_png
from clotseg.synth import make_case
from tests.synth import restored


@pytest.fixture(scope="module")
def case():
    return make_case(5, clot=True)


def _decode(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def test_clot_slices_png_size_outlines_and_file(case, tmp_path):
    path = tmp_path / "sub" / "slices.png"
    data = clot_slices_png(case.cta, case.ncct, case.clot, None, path, n_slices=3)
    assert path.read_bytes() == data
    img = _decode(data)
    assert img.shape == (837, 540, 3)  # 3 rows × 2 panels of 3 in at 90 dpi, plus margin
    green = (img[..., 1] > 200) & (img[..., 0] < 120) & (img[..., 2] < 120)
    red = (img[..., 0] > 200) & (img[..., 1] < 120) & (img[..., 2] < 120)
    assert green.sum() > 20 and red.sum() == 0  # reference outline only
    both = _decode(clot_slices_png(case.cta, case.ncct, case.clot, case.clot, None))
    assert ((both[..., 0] > 200) & (both[..., 1] < 120) & (both[..., 2] < 120)).sum() > 20
    two = _decode(clot_slices_png(case.cta, case.ncct, None, None, None, n_slices=2))
    assert two.shape[:2] == (567, 540)


def test_figures_do_not_depend_on_storage_orientation(case):
    """The same patient stored with permuted and flipped axes gives the same picture."""
    perm, flip = (1, 2, 0), (True, False, True)
    other = [restored(v, perm, flip) for v in (case.cta, case.ncct, case.clot)]
    assert clot_slices_png(case.cta, case.ncct, case.clot, None, None) == \
        clot_slices_png(*other[:2], other[2], None, None)
    assert mip_png(case.cta, case.clot, None, None) == mip_png(other[0], other[2], None, None)


def test_mip_png(case, tmp_path):
    data = mip_png(case.cta, case.clot, case.clot, tmp_path / "mip.png")
    img = _decode(data)
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :].std() > 10  # not blank


def test_mask_on_another_grid_is_refused(case):
    from clotseg.io.volume import Volume

    bad = Volume(case.clot.array[:-1], case.clot.spacing, case.clot.origin, case.clot.direction)
    with pytest.raises(ValueError, match="CTA grid"):
        clot_slices_png(case.cta, case.ncct, bad, None, None)


def test_mip_removes_bone_and_keeps_the_vessels(case):
    """The skull no longer saturates the projection; contrast-filled vessels remain."""
    from clotseg.io.orientation import orientation_of
    from clotseg.report.figures import BONE_HU, _mip_source

    orient = orientation_of(case.cta.grid)
    c = orient.to_canonical(np.asarray(case.cta.array, dtype=np.float32))
    sp = orient.canonical_spacing(case.cta.spacing)
    clot = orient.to_canonical(np.asarray(case.clot.array)) > 0
    hu, extent = _mip_source(c, sp, [clot, None])
    assert "slab" in extent and hu.shape[2] < c.shape[2]
    naive = np.clip(c, -100, 700).max(axis=2)
    mip = hu.max(axis=2)
    assert (c > BONE_HU).any()  # the phantom has a skull to remove
    assert (mip >= 600).mean() < 0.25 * (naive >= 600).mean()
    assert (mip > 200).sum() > 50  # enhanced vessels are still projected
