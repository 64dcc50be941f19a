"""One-modality cases: a case with only a CTA or only an NCCT is predicted on its one
scan's grid, the absent scan fed as "missing" (0 in normalised units, as modality dropout
trains it), and every table says which scans were used.

The stub network reads the centre channel of both blocks (``modality="any"``), so a clot
painted into whichever scan exists comes back exactly: geometry is checked voxel for
voxel on oblique and flipped storage directions.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.io.ongrid import file_grid
from clotseg.io.readers import read_volume
from clotseg.io.volume import Volume
from clotseg.runs import ModelSpec, load_model_spec
from tests.helpers import DIRECTIONS
from tests.inference.conftest import case_volumes, paint_mask, write_case, write_run

SHAPE = (16, 14, 10)
#: NCCT HU of a painted clot: 0.95 in the NCCT window (0..100 HU), above the stub's level.
NCCT_CLOT_HU = 95


def _ncct_with_clot(mask: np.ndarray, direction, **grid) -> Volume:
    """An NCCT whose clot voxels are bright (the stub finds them from the NCCT alone)."""
    _, ncct = case_volumes(mask, direction, **grid)
    arr = np.clip(ncct.array, 0, 60)
    arr[mask > 0] = NCCT_CLOT_HU
    return ncct.with_array(arr.astype(np.int16))


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("dname", ["oblique", "ras_flip"])
def test_one_modality_cases_predict_on_their_own_grid(tmp_path, dname):
    d = DIRECTIONS[dname]
    painted = paint_mask(SHAPE)
    data = tmp_path / "data"
    cta, ncct = case_volumes(painted, d)
    write_case(data / "both", cta, ncct)
    write_case(data / "cta_only", cta, None)
    # the NCCT-only case on a grid of its own (other spacing and origin than any CTA)
    ncct_only = _ncct_with_clot(painted, d, spacing=(0.5, 0.55, 2.0), origin=(3.0, -8.0, 40.0))
    write_case(data / "ncct_only", None, ncct_only)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2, "modality": "any"},
                    modality_dropout=0.2)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(data), str(out), "--device", "cpu", "--quiet",
                 "--preview"]) == 0
    for case_id, src in (("both", "cta"), ("cta_only", "cta"), ("ncct_only", "ncct")):
        scan = data / case_id / f"{src}.nii.gz"
        mask = read_volume(out / f"{case_id}.nii.gz")
        assert file_grid(out / f"{case_id}.nii.gz").same_as(file_grid(scan)), case_id
        np.testing.assert_array_equal(mask.array, painted, err_msg=case_id)
        assert (out / f"{case_id}.png").is_file()  # the preview draws what exists
    summary = json.loads((out / "predict.json").read_text())
    assert summary["failed"] == {}
    assert summary["inputs"] == {"both": ["cta", "ncct"], "cta_only": ["cta"],
                                 "ncct_only": ["ncct"]}
    assert any("only a CTA (no NCCT)" in w for w in summary["warnings"]["cta_only"])
    assert any("only an NCCT (no CTA)" in w for w in summary["warnings"]["ncct_only"])
    assert not any("modality dropout" in w for ws in summary["warnings"].values() for w in ws)
    clots, cases = _rows(out / "clots.csv"), _rows(out / "cases.csv")
    assert list(clots[0])[-1] == "inputs" and list(cases[0])[-1] == "inputs"
    by_case = {r["case_id"]: r for r in cases}
    assert by_case["both"]["inputs"] == "cta+ncct" and by_case["both"]["perviousness_hu"]
    for case_id, inputs in (("cta_only", "cta"), ("ncct_only", "ncct")):
        row = by_case[case_id]
        assert row["inputs"] == inputs and row["perviousness_hu"] == "nan"  # NaN cell
        assert row["pervious"] == "" and float(row["volume_mm3"]) > 0
    assert by_case["cta_only"]["ncct_mean_hu"] == "nan"
    assert float(by_case["cta_only"]["cta_mean_hu"]) > 0
    assert by_case["ncct_only"]["cta_mean_hu"] == "nan"
    assert float(by_case["ncct_only"]["ncct_mean_hu"]) == pytest.approx(NCCT_CLOT_HU)
    for r in clots:
        assert r["inputs"] == {"both": "cta+ncct", "cta_only": "cta",
                               "ncct_only": "ncct"}[r["case_id"]]
        if r["case_id"] != "both":
            assert r["perviousness_hu"] == "nan" and r["relative_density"] == "nan"


def test_model_without_dropout_still_predicts_with_a_warning(tmp_path):
    # A model.json written before modality dropout existed has no such field: it loads,
    # and a one-modality case is predicted with a warning that it never saw one.
    painted = paint_mask(SHAPE)
    cta, _ = case_volumes(painted, DIRECTIONS["oblique"])
    write_case(tmp_path / "data" / "p1", cta, None)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2})
    spec_path = run / "model.json"
    data = json.loads(spec_path.read_text())
    data.pop("modality_dropout")
    spec_path.write_text(json.dumps(data))
    spec = load_model_spec(run)
    assert spec.modality_dropout is None and not spec.trained_for_missing
    out = tmp_path / "out"
    assert main(["predict", str(run), str(tmp_path / "data"), str(out), "--device", "cpu",
                 "--quiet"]) == 0
    summary = json.loads((out / "predict.json").read_text())
    assert summary["ok"] == ["p1"] and summary["inputs"] == {"p1": ["cta"]}
    assert any("trained without modality dropout" in w for w in summary["warnings"]["p1"])
    np.testing.assert_array_equal(read_volume(out / "p1.nii.gz").array, painted)


def test_modality_dropout_is_validated_in_model_json():
    spec = ModelSpec("test-paint", {}, modality_dropout=0.2)
    assert ModelSpec.from_dict(json.loads(spec.to_json())).modality_dropout == 0.2
    with pytest.raises(ValueError, match="modality_dropout"):
        ModelSpec.from_dict({"model_name": "x", "model_kwargs": {}, "modality_dropout": "a"})


@pytest.mark.parametrize("spacing", [None, (0.7, 0.7, 1.0)])
@pytest.mark.parametrize("present", ["cta", "ncct"])
def test_one_modality_case_through_a_preprocessing_model(tmp_path, spacing, present):
    # A model with preprocessing (registration, automatic ROI): with one scan nothing is
    # registered (there is nothing to register), with only an NCCT the ROI is the whole
    # scan, and the mask comes back on the present scan's grid.
    from clotseg.api import segment_volumes
    from clotseg.preprocess.pipeline import PreprocessSettings

    painted = paint_mask(SHAPE)
    if present == "ncct":
        scans = (None, _ncct_with_clot(painted, DIRECTIONS["ras_flip"]))
    else:
        scans = (case_volumes(painted, DIRECTIONS["ras_flip"])[0], None)
    scan = scans[0] if present == "cta" else scans[1]
    settings = PreprocessSettings(register=True, roi="auto", spacing=spacing)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2, "modality": "any"},
                    preprocess=settings, modality_dropout=0.2)
    with pytest.warns(UserWarning, match=f"only an? {present.upper()}"):
        mask, prob, rows = segment_volumes(run, *scans, device="cpu")
    assert mask.grid.same_as(scan.grid) and prob.shape == scan.shape
    assert rows[0]["inputs"] == present and np.isnan(rows[0]["perviousness_hu"])
    core, got = painted.astype(bool), mask.array.astype(bool)
    if spacing is None:
        np.testing.assert_array_equal(got, core)
    else:  # resampled there and back: the clot's core is found
        assert 2 * (core & got).sum() / (core.sum() + got.sum()) > 0.8


def test_missing_channels_are_the_value_training_drops_to():
    # predict's "missing" input and training's modality dropout write the same value.
    import torch

    from clotseg.data.augment import drop_modality
    from clotseg.data.slabs import MISSING_VALUE, prepare_case
    from clotseg.inference.predictor import with_stand_in

    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["oblique"])
    for missing in ("cta", "ncct"):
        a, b = with_stand_in(None if missing == "cta" else cta,
                             None if missing == "ncct" else ncct, missing)
        image = prepare_case("c", a, b, None, missing=missing).image
        gone, kept = (0, 1) if missing == "cta" else (1, 0)
        assert (image[gone] == MISSING_VALUE).all() and image[kept].max() > 0
    x = torch.rand(64, 6, 8, 8) + 0.1  # never 0 before dropout
    y = drop_modality(x, 1.0, torch.Generator().manual_seed(3))
    dropped = (y == MISSING_VALUE).all(dim=(2, 3))  # (B, C)
    cta_gone, ncct_gone = dropped[:, :3].all(1), dropped[:, 3:].all(1)
    assert (cta_gone ^ ncct_gone).all()  # exactly one modality per sample
    assert not (dropped[:, :3].any(1) & ~cta_gone).any()  # a block is dropped whole
    assert 10 < int(cta_gone.sum()) < 54  # both modalities are chosen
    kept = ~dropped
    assert torch.equal(y[kept], x[kept])  # the other channels untouched
    assert torch.equal(drop_modality(x, 0.0, torch.Generator().manual_seed(3)), x)
    # the share of dropped samples that lose the NCCT: 0.5 is the default's very draws
    assert torch.equal(drop_modality(x, 1.0, torch.Generator().manual_seed(3), 0.5), y)
    for share, ncct_lost in ((1.0, 64), (0.0, 0)):
        z = drop_modality(x, 1.0, torch.Generator().manual_seed(3), share)
        assert int((z[:, 3:] == MISSING_VALUE).all(dim=(1, 2, 3)).sum()) == ncct_lost
        assert int((z[:, :3] == MISSING_VALUE).all(dim=(1, 2, 3)).sum()) == 64 - ncct_lost
    z = drop_modality(x, 1.0, torch.Generator().manual_seed(3), 0.8)
    assert 40 < int((z[:, 3:] == MISSING_VALUE).all(dim=(1, 2, 3)).sum()) < 62


def test_measure_and_report_figures_of_an_ncct_only_case(tmp_path):
    # `clotseg measure` takes a mask on the NCCT grid of an NCCT-only case; the report's
    # case figures draw the NCCT, a blank CTA panel and say what is missing (no MIP).
    from clotseg.io.layouts import discover
    from clotseg.io.readers import write_volume
    from clotseg.measure.masks import measure_masks
    from clotseg.report.views import _figures

    painted = paint_mask(SHAPE)
    ncct = _ncct_with_clot(painted, DIRECTIONS["oblique"])
    write_case(tmp_path / "data" / "n1", None, ncct)
    write_volume(ncct.with_array(painted), tmp_path / "masks" / "n1.nii.gz", mask=True)
    result = measure_masks(tmp_path / "masks", tmp_path / "data")
    assert not result.failed and {r["inputs"] for r in result.rows} == {"ncct"}
    assert all(np.isnan(r["cta_mean_hu"]) for r in result.rows)
    messages: list[str] = []
    case = discover(tmp_path / "data")["n1"]
    slices, mip = _figures(case, tmp_path / "masks", messages)
    assert slices.startswith("data:image/png") and mip is None
    assert any("no CTA" in m for m in messages)
