"""The case and grid helpers live in io; the names inference has always offered stay."""

from __future__ import annotations

import clotseg.inference.cases as cases
import clotseg.inference.outputs as outputs
import clotseg.inference.predictor as predictor
from clotseg.io import ongrid
from clotseg.io.cases import load_case


def test_inference_reexports_the_io_helpers():
    for name in ("check_grid", "cta_grid_on_disk", "file_grid", "write_on_grid"):
        assert getattr(predictor, name) is getattr(ongrid, name)
        assert getattr(outputs, name) is getattr(ongrid, name)
    assert predictor.load_case is cases.load_case is load_case
