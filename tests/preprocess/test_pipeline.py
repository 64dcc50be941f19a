"""The preprocessing pipeline: one case, mapping results back, whole datasets, the CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from clotseg.errors import ClotsegError, UsageError
from clotseg.io import read_volume, write_volume
from clotseg.io.volume import Volume
from clotseg.preprocess.pipeline import (
    PreprocessSettings,
    preprocess_case,
    preprocess_dataset,
    restore_prediction,
    restore_probability,
)
from tests.helpers import DIRECTIONS
from tests.preprocess import COW_CENTRE, make_grid, make_head


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def blob(grid, centre, radii) -> np.ndarray:
    pts = grid.index_to_physical(np.indices(grid.shape).reshape(3, -1).T)
    d = np.sum(((pts - centre) / np.asarray(radii)) ** 2, axis=1)
    return (d <= 1).reshape(grid.shape).astype(np.uint8)


@pytest.fixture(scope="module")
def small_head():
    """A coarse head (fast) with a clot-sized blob as mask, on an oblique grid."""
    grid = make_grid(shape=(64, 76, 36), spacing=(2.0, 2.0, 3.5),
                     direction=DIRECTIONS["oblique"])
    cta, ncct, _ = make_head(grid, seed=3)
    mask = cta.with_array(blob(cta.grid, COW_CENTRE + [20.0, 0.0, 3.0], (9.0, 5.0, 6.0)))
    return cta, ncct, mask


@pytest.mark.parametrize("spacing", [None, (0.9, 1.1, 1.3)])
def test_restore_gives_back_the_original_grid_exactly(small_head, spacing):
    cta, ncct, mask = small_head
    settings = PreprocessSettings(register=False, spacing=spacing, roi="auto",
                                  roi_size_mm=70.0)
    pc = preprocess_case(cta, ncct, mask, settings)
    assert pc.ncct.grid.same_as(pc.cta.grid) and pc.mask.grid.same_as(pc.cta.grid)
    assert pc.mask.array.sum() > 0
    if spacing is not None:
        # patient x, y, z spacing land on the array axes closest to them
        patient_axis = np.argmax(np.abs(cta.direction_matrix), axis=0)
        np.testing.assert_allclose(pc.cta.spacing, np.asarray(spacing)[patient_axis])
    assert max(np.asarray(pc.cta.shape) * pc.cta.spacing) < 80.0  # cropped
    back = restore_prediction(pc.mask, json.loads(json.dumps(pc.info)))
    assert back.shape == cta.shape and back.spacing == cta.spacing
    assert back.origin == cta.origin and back.direction == cta.direction
    assert back.array.dtype == np.uint8
    assert dice(back.array, mask.array) > (0.999 if spacing is None else 0.85)
    prob = restore_probability(pc.mask.with_array(pc.mask.array.astype(np.float32) * 0.8),
                               pc.info)
    assert prob.grid.same_as(cta.grid, atol_mm=1e-9) and prob.array.dtype == np.float32
    assert 0.75 < prob.array.max() <= 0.8 + 1e-6 and prob.array.min() == 0.0


def test_unchanged_spacing_is_an_exact_crop(small_head):
    cta, ncct, mask = small_head
    pc = preprocess_case(cta, ncct, mask, PreprocessSettings(register=False, roi="auto",
                                                             roi_size_mm=70.0))
    box = pc.info["crop_box"]
    sl = tuple(slice(a, b) for a, b in zip(box["start"], box["stop"]))
    np.testing.assert_array_equal(pc.cta.array, cta.array[sl])
    np.testing.assert_array_equal(pc.ncct.array, ncct.array[sl])
    assert pc.cta.array.dtype == cta.array.dtype
    assert pc.info["mask"]["clot_cut_by_roi"] is False


def test_ncct_on_its_own_grid_is_resampled_without_registration(small_head):
    cta, _, mask = small_head
    ncct_grid = make_grid(shape=(50, 60, 30), spacing=(2.4, 2.4, 4.0))
    _, ncct, _ = make_head(ncct_grid, seed=4)
    with pytest.warns(UserWarning, match="NCCT covers only"):
        pc = preprocess_case(cta, ncct, mask, PreprocessSettings(register=False, roi="none"))
    assert pc.ncct.grid.same_as(cta.grid) and pc.info["ncct_coverage"] < 0.95
    assert pc.info["registration"] is None
    bone = np.asarray(cta.array) > 700
    assert np.mean(np.asarray(pc.ncct.array)[bone] > 300) > 0.8  # same anatomy, same place


def test_registration_runs_and_is_recorded():
    grid = make_grid(shape=(64, 76, 36), spacing=(2.0, 2.0, 3.5))
    cta, ncct, mask = make_head(grid, motion=((0.0, 0.0, 4.0), (3.0, -2.0, 1.0)), seed=6)
    pc = preprocess_case(cta, ncct, mask, PreprocessSettings(register=True, roi="none"))
    reg = pc.info["registration"]
    assert reg["alignment_ok"] and reg["alignment_after"]["surface_mm"] < 1.0
    assert reg["alignment_before"]["surface_mm"] > reg["alignment_after"]["surface_mm"]
    assert abs(reg["transform"]["rotation_deg"] - 4.0) < 0.5
    json.dumps(pc.info)


def test_mask_on_another_grid_is_refused(small_head):
    cta, ncct, mask = small_head
    wrong = Volume(mask.array, mask.spacing, tuple(np.asarray(mask.origin) + 5.0),
                   mask.direction)
    with pytest.raises(ClotsegError, match="mask grid differs"):
        preprocess_case(cta, ncct, wrong, PreprocessSettings(register=False))


def test_roi_that_cuts_the_clot_is_reported(small_head):
    cta, ncct, mask = small_head
    with pytest.warns(UserWarning, match="ROI cuts the clot"):
        pc = preprocess_case(cta, ncct, mask, PreprocessSettings(
            register=False, roi="auto", roi_size_mm=(20.0, 20.0, 20.0)))
    assert pc.info["mask"]["clot_cut_by_roi"] is True


def test_restore_refuses_a_mask_from_another_grid(small_head):
    cta, ncct, mask = small_head
    pc = preprocess_case(cta, ncct, mask, PreprocessSettings(register=False, roi_size_mm=70.0))
    with pytest.raises(ClotsegError, match="not on the processed grid"):
        restore_prediction(mask, pc.info)


def test_settings_validation_and_round_trip():
    s = PreprocessSettings(spacing=(0.5, 0.5, 1.0), roi="mask", roi_size_mm=(90, 80, 60))
    assert PreprocessSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(UsageError):
        PreprocessSettings(roi="brain")
    with pytest.raises(UsageError):
        PreprocessSettings(spacing=(0.5, -1.0, 1.0))
    with pytest.raises(UsageError):
        PreprocessSettings(roi_size_mm=(10.0, 20.0))


def _write_dataset(root, n=2):
    """``n`` good cases (NCCT on its own grid for the second) and one broken case."""
    for i in range(n):
        grid = make_grid(shape=(48, 58, 28), spacing=(2.6, 2.6, 4.5))
        cta, ncct, _ = make_head(grid, seed=10 + i)
        mask = cta.with_array(blob(cta.grid, COW_CENTRE + [18.0, 0.0, 3.0], (6.0, 4.0, 5.0)))
        if i == 1:
            _, ncct, _ = make_head(make_grid(shape=(40, 48, 24), spacing=(3.0, 3.0, 5.0)),
                                   seed=20)
        write_volume(cta, root / f"p{i}" / "cta.nii.gz")
        write_volume(ncct, root / f"p{i}" / "ncct.nii.gz")
        write_volume(mask, root / f"p{i}" / "clot.nii.gz", mask=True)
    bad = root / "p9"
    write_volume(cta, bad / "cta.nii.gz")
    (bad / "ncct.nii.gz").write_bytes(b"\x1f\x8b broken gzip")
    return root


def test_preprocess_dataset_end_to_end(tmp_path, capsys):
    data = _write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    settings = PreprocessSettings(register=False, spacing=(2.0, 2.0, 2.0), roi="auto",
                                  roi_size_mm=80.0)
    code = preprocess_dataset(data, out, settings, progress=False)
    assert code == 1  # one broken case
    err = capsys.readouterr().err
    assert "case p9: failed" in err and "ncct.nii.gz" in err
    summary = json.loads((out / "preprocess.json").read_text())
    assert set(summary["cases"]) == {"p0", "p1"} and set(summary["failed"]) == {"p9"}
    assert summary["settings"]["spacing"] == [2.0, 2.0, 2.0]
    assert not (out / "p9").exists()
    for cid in ("p0", "p1"):
        cta = read_volume(out / cid / "cta.nii.gz")
        ncct = read_volume(out / cid / "ncct.nii.gz")
        clot = read_volume(out / cid / "clot.nii.gz")
        assert ncct.grid.same_as(cta.grid) and clot.grid.same_as(cta.grid)
        np.testing.assert_allclose(cta.spacing, (2.0, 2.0, 2.0))
        info = json.loads((out / cid / "preprocess.json").read_text())
        assert info["case_id"] == cid and info["source"]["cta"].endswith("cta.nii.gz")
        original = read_volume(data / cid / "clot.nii.gz")
        back = restore_prediction(clot, info)
        assert back.grid.same_as(original.grid, atol_mm=1e-6)
        assert dice(back.array, original.array) > 0.8
    # The case-folder output is a dataset the rest of clotseg reads.
    from clotseg.io.layouts import discover

    assert discover(out).case_ids == ["p0", "p1"]


def test_cli_preprocess(tmp_path, capsys):
    from clotseg.cli import main

    data = _write_dataset(tmp_path / "data", n=1)
    (data / "p9" / "ncct.nii.gz").unlink()
    write_volume(read_volume(data / "p0" / "ncct.nii.gz"), data / "p9" / "ncct.nii.gz")
    code = main(["preprocess", str(data), str(tmp_path / "out"), "--no-register",
                 "--roi", "auto", "--roi-size", "90", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "p0" / "clot.nii.gz").is_file()
    assert not (tmp_path / "out" / "p9" / "clot.nii.gz").exists()  # p9 has no mask
    assert main(["preprocess", str(data), str(data), "--no-progress"]) == 2
    with pytest.raises(SystemExit) as bad_spacing:  # rejected while parsing, like a typo
        main(["preprocess", str(data), str(tmp_path / "o2"), "--spacing", "1", "0", "1",
              "--no-progress"])
    assert bad_spacing.value.code == 2
    assert main(["preprocess", str(tmp_path / "nope"), str(tmp_path / "o3")]) == 1


def test_cli_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = ("import sys; from clotseg import cli; p = cli.build_parser; "
            "sys.argv = ['clotseg', 'preprocess', '--help']\n"
            "try:\n    cli.main(['preprocess', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('SimpleITK', 'torch', 'scipy', 'clotseg.preprocess.register')"
            " if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "--npy-spacing" in out and "--roi-size" in out
    assert "HEAVY []" in out


def test_a_region_too_small_for_a_clot_is_warned(small_head):
    cta, ncct, _ = small_head
    origin = tuple(cta.grid.index_to_physical(np.array([[0.0, 0.0, 10.0]]))[0])
    two_slices = Volume(np.asarray(cta.array)[:, :, 10:12].copy(), cta.spacing, origin,
                        cta.direction)
    with pytest.warns(UserWarning, match="processed region is only"):
        pc = preprocess_case(two_slices, ncct, None,
                             PreprocessSettings(register=False, roi="none"))
    assert any("too small to hold a clot" in w for w in pc.info["warnings"])
    with warnings.catch_warnings(record=True) as seen:  # the whole head: no such warning
        warnings.simplefilter("always")
        full = preprocess_case(cta, ncct, None, PreprocessSettings(register=False,
                                                                   roi="none"))
    assert not any("too small" in str(w.message) for w in seen)
    assert not any("too small" in w for w in full.info["warnings"])
