"""``benchmarks/shift_factors.py``: each single-factor cohort moves exactly its knob of the
shifted site and nothing else, so that its score blames the right knob."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
shift_factors = pytest.importorskip("shift_factors")

from clotseg.synth.shift import SHIFTED, ImagingShift  # noqa: E402


def test_every_knob_of_the_shifted_site_belongs_to_one_factor():
    knobs = {f.name for f in dataclasses.fields(ImagingShift)} - {"name"}
    owned = [k for fields in shift_factors.FACTORS.values() for k in fields]
    assert sorted(owned) == sorted(knobs)  # each knob once: none forgotten, none twice


@pytest.mark.parametrize("factor", list(shift_factors.FACTORS))
def test_a_factor_cohort_shifts_only_its_own_knobs(factor):
    shift = shift_factors.shift_for(factor)
    standard = ImagingShift()
    for f in dataclasses.fields(ImagingShift):
        if f.name == "name":
            continue
        got = getattr(shift, f.name)
        if f.name in shift_factors.FACTORS[factor]:
            assert got == getattr(SHIFTED, f.name)
        else:
            assert got == getattr(standard, f.name), f.name


def test_a_factor_cohort_is_written_with_the_shifted_patients(tmp_path):
    """Two cases of the blur-only cohort: the shifted cohort's seeds, NRRD files, and only
    the scanner blur drawn from the shifted range."""
    import csv

    from clotseg.synth import shift as shift_mod

    out = shift_factors.write_factor_cohort(tmp_path / "blur", "blur", 2)
    with open(out / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["shift"] for r in rows] == ["only_blur", "only_blur"]
    assert sorted(p.name for p in (out / "synth_000").iterdir()) == [
        "clot.nrrd", "cta.nrrd", "ncct.nrrd"]
    assert "only_blur" not in shift_mod.SHIFTS  # registered only while writing
    seeds = [int(r["seed"]) for r in rows]
    from clotseg.synth import case_seed

    assert seeds == [case_seed(shift_factors.COHORTS["shifted"][0], k) for k in range(2)]
    drawn = shift_mod.make_shifted_case(seeds[0], "small", shift_factors.shift_for("blur"))
    assert set(drawn.truth["shift_values"]) == {"psf_mm"}
    assert np.isfinite(drawn.truth["shift_values"]["psf_mm"])
