"""Swapped CTA and NCCT files: the contrast must lie on the scan given as CTA."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.io.volume import Volume
from clotseg.preprocess import contrast
from clotseg.preprocess.contrast import contrast_volumes, swap_note
from clotseg.synth import make_case
from clotseg.synth.shift import make_shifted_case

CASES = [
    pytest.param(lambda: make_case(2, "small", clot=True), id="thin, registered"),
    pytest.param(lambda: make_case(4, "small", registered=False, clot=True),
                 id="NCCT moved, own grid"),
    pytest.param(lambda: make_case(5, "small", ncct_thickness_mm=5.0, clot=True),
                 id="5 mm NCCT"),
    pytest.param(lambda: make_shifted_case(7, "small", ncct_thickness_mm=5.0, clot=True),
                 id="shifted site, rotated, 5 mm NCCT"),
]


@pytest.mark.parametrize("make", CASES)
def test_a_pair_is_quiet_and_its_swap_is_named(make):
    case = make()
    assert swap_note(case.cta, case.ncct) is None
    note = swap_note(case.ncct, case.cta)  # the files given the other way round
    assert note is not None and note.startswith("CTA and NCCT look swapped")


def test_both_sides_are_measured_away_from_bone():
    spacing = (1.0, 1.0, 1.0)
    a = np.full((40, 40, 40), 30.0, np.float32)  # brain
    b = a.copy()
    a[20, 20, 5:35] = 300.0  # a contrast-filled vessel on a only: 30 voxels of 1 mm³
    b[5, 5, 5:9] = 300.0  # a bright spot on b only, 4 mm³ ...
    b[4:6, 6:8, 6:8] = 1000.0  # ... within 4 mm of bone, so it does not count
    assert contrast_volumes(a, b, spacing, 4.0) == (30.0, 0.0)
    assert contrast_volumes(b, a, spacing, 4.0) == (0.0, 30.0)
    assert contrast_volumes(a, b, spacing, 0.5) == (30.0, 4.0)


def test_too_little_contrast_on_either_side_says_nothing():
    brain = Volume(np.full((30, 30, 30), 30, np.int16), (1.0, 1.0, 1.0))
    faint = brain.array.copy()
    faint[15, 15, 12:15] = 300  # 3 mm³: below the smallest volume that names a swap
    assert swap_note(brain, brain.with_array(faint)) is None
    faint[15, 15, 5:25] = 300
    assert "swapped" in swap_note(brain, brain.with_array(faint))
    assert contrast.MIN_SWAPPED_MM3 > 3.0
