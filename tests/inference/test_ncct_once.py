"""On the predict path the NCCT is resampled onto the CTA grid (or a box of it) once, and
the NCCT handed to the measurements is that same volume."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.io.volume import Volume
from clotseg.preprocess.pipeline import PreprocessSettings
from tests.helpers import DIRECTIONS
from tests.inference.conftest import case_volumes, paint_mask, write_run

SHAPE = (16, 14, 10)


def _on_cta_lattice(grid, cta) -> bool:
    return np.allclose(grid.spacing, cta.spacing) and np.allclose(grid.direction, cta.direction)


@pytest.fixture
def count_ncct_resamples(monkeypatch):
    """Counts resamplings of the given NCCT onto the CTA grid or a box of it."""
    import clotseg.preprocess.ncct as ncct_mod
    import clotseg.preprocess.pipeline as pipeline_mod

    calls: list = []
    real = pipeline_mod.resample_to_grid

    def counting(vol, grid, **kw):
        calls.append((vol, grid))
        return real(vol, grid, **kw)

    monkeypatch.setattr(ncct_mod, "resample_to_grid", counting)
    monkeypatch.setattr(pipeline_mod, "resample_to_grid", counting)

    def count(ncct: Volume, cta: Volume) -> int:
        return sum(1 for v, g in calls if v is ncct and _on_cta_lattice(g, cta))
    return count


def _fake_registration(monkeypatch):
    """A registration that finds a 0.3 mm shift, without the cost of running one."""
    import SimpleITK as sitk

    import clotseg.preprocess.register as register

    class Result:
        transform = sitk.Euler3DTransform()
        transform.SetParameters((0.0, 0.0, 0.0, 0.3, 0.0, 0.0))
        alignment_ok, message = True, "fine"

        def info(self):
            return {"transform": register.transform_to_dict(self.transform)}

    monkeypatch.setattr(register, "register_rigid", lambda *a, **k: Result())


@pytest.mark.filterwarnings("ignore:NCCT covers only")
@pytest.mark.parametrize("setup", ["native", "crop", "crop+register", "spacing+register",
                                   "native+crop"])
def test_predict_resamples_the_ncct_onto_the_cta_grid_once(tmp_path, monkeypatch,
                                                           count_ncct_resamples, setup):
    from clotseg.api import segment_volumes
    from clotseg.inference.predictor import Predictor

    if "register" in setup:
        _fake_registration(monkeypatch)
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["oblique"])
    # The NCCT on its own (shifted) grid: it must be resampled.
    ncct = Volume(ncct.array, ncct.spacing, tuple(np.asarray(ncct.origin) + 0.2),
                  ncct.direction)
    crop = PreprocessSettings(register=False, roi="none")
    crop_reg = PreprocessSettings(register=True, roi="none")
    spacing_reg = PreprocessSettings(register=True, roi="none", spacing=(0.7, 0.7, 1.2))
    preprocess = {"native": [None], "crop": [crop], "crop+register": [crop_reg],
                  "spacing+register": [spacing_reg], "native+crop": [None, crop]}[setup]
    runs = [write_run(tmp_path / f"run{i}", "test-paint", {"in_channels": 2}, preprocess=pre)
            for i, pre in enumerate(preprocess)]
    predictor = Predictor.from_runs(runs, device="cpu")
    seg = predictor.segment(cta, ncct)
    assert seg.ncct.grid.same_as(cta.grid)
    assert count_ncct_resamples(ncct, cta) == 1
    mask, _, rows = segment_volumes(predictor, cta, ncct)
    assert mask.grid.same_as(cta.grid) and rows
