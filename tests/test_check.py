"""`clotseg check` on a deliberately broken dataset: every fault named with its file."""

from __future__ import annotations

import numpy as np
import pytest

from clotseg.cli import main
from clotseg.io import Volume, write_volume
from tests.helpers import DIRECTIONS, make_volume


def _good_case(root, name, seed=0):
    cta = make_volume(DIRECTIONS["oblique"], seed=seed)
    cta = cta.with_array(cta.array + np.where(cta.array > 90, 300, 0).astype(np.float32))
    ncct = cta.with_array(np.clip(cta.array, -50, 90).astype(np.float32))
    mask = cta.with_array((cta.array > 300).astype(np.uint8))
    write_volume(cta, root / name / "cta.nii.gz")
    write_volume(ncct, root / name / "ncct.nii.gz")
    write_volume(mask, root / name / "clot.nii.gz", mask=True)
    return cta, ncct, mask


@pytest.fixture()
def broken(tmp_path):
    root = tmp_path / "data"
    cta, ncct, mask = _good_case(root, "good")
    faults = {}
    # unreadable: text renamed, corrupt gzip
    _good_case(root, "text_file")
    (root / "text_file" / "ncct.nii.gz").write_text("hello")
    faults["text_file"] = ("ncct.nii.gz", "gzip")
    _good_case(root, "truncated")
    p = root / "truncated" / "cta.nii.gz"
    p.write_bytes(p.read_bytes()[:300])
    faults["truncated"] = ("cta.nii.gz", "gzip")
    # neither scan (a lone mask); one scan alone is a warning (test below)
    write_volume(mask, root / "no_scan" / "clot.nii.gz", mask=True)
    faults["no_scan"] = ("no_scan", "neither a CTA nor an NCCT")
    # mask on another grid
    _good_case(root, "mask_grid")
    shifted = Volume(mask.array, mask.spacing, (0, 0, 0), mask.direction)
    write_volume(shifted, root / "mask_grid" / "clot.nii.gz", mask=True)
    faults["mask_grid"] = ("clot.nii.gz", "mask grid differs")
    # NCCT far away (no overlap) -> error
    _good_case(root, "ncct_far")
    far = Volume(ncct.array, ncct.spacing, (900, 900, 900), ncct.direction)
    write_volume(far, root / "ncct_far" / "ncct.nii.gz")
    faults["ncct_far"] = ("ncct.nii.gz", "does not overlap")
    # non-finite voxels
    _good_case(root, "nan")
    bad = cta.array.copy()
    bad[1, 2, 3] = np.nan
    write_volume(cta.with_array(bad), root / "nan" / "cta.nii.gz")
    faults["nan"] = ("cta.nii.gz", "non-finite")
    # non-binary mask
    _good_case(root, "labels")
    write_volume(mask.with_array(mask.array * 255), root / "labels" / "clot.nii.gz", mask=True)
    faults["labels"] = ("clot.nii.gz", "not binary")
    # scaled 0..1 and 0..255
    _good_case(root, "unit_scaled")
    a = cta.array
    write_volume(cta.with_array((a - a.min()) / (a.max() - a.min())),
                 root / "unit_scaled" / "cta.nii.gz")
    faults["unit_scaled"] = ("cta.nii.gz", "0–1")
    _good_case(root, "byte_scaled")
    write_volume(ncct.with_array(np.round(np.clip(ncct.array, 0, 255)).astype(np.uint8)),
                 root / "byte_scaled" / "ncct.nii.gz")
    faults["byte_scaled"] = ("ncct.nii.gz", "8-bit")
    # duplicate id differing only in case
    _good_case(root, "GOOD")
    return root, faults


def test_check_names_every_fault(broken, capsys):
    root, faults = broken
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    for case, (fname, reason) in faults.items():
        hits = [ln for ln in lines if ln.startswith("ERROR") and f" {case}:" in ln
                and reason in ln]
        assert hits, f"no error for {case} ({reason}) in:\n{out}"
        assert any(fname in h for h in hits), hits
    dup = [ln for ln in lines if "duplicate case id" in ln]
    assert len(dup) == 1 and "GOOD" in dup[0] and "/good/" in dup[0]
    assert "Traceback" not in out
    assert f"{len(faults) + 2} case(s) checked" in lines[-1]


def test_check_warnings_only_exit_zero_unless_strict(tmp_path, capsys):
    root = tmp_path / "data"
    cta, ncct, mask = _good_case(root, "a")
    write_volume(mask.with_array(np.zeros_like(mask.array)), root / "a" / "clot.nii.gz",
                 mask=True)
    moved = Volume(ncct.array, ncct.spacing, tuple(np.add(ncct.origin, 1.5)), ncct.direction)
    write_volume(moved, root / "a" / "ncct.nii.gz")
    assert main(["check", str(root), "--csv", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "WARNING a:" in out and "mask is empty" in out and "resamples it" in out
    assert main(["check", str(root), "--strict"]) == 1
    assert sum(ln.startswith("warning,") for ln in (tmp_path / "p.csv").read_text().splitlines()) == 2


def test_check_clean_dataset(tmp_path, capsys):
    root = tmp_path / "data"
    _good_case(root, "a")
    _good_case(root, "b", seed=1)
    assert main(["check", str(root)]) == 0
    assert "0 error(s)" in capsys.readouterr().out


def test_check_missing_folder_is_exit_1(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_check_warns_but_passes_one_modality_cases(tmp_path, capsys):
    # A case with only a CTA or only an NCCT: predict takes it, so a warning, not an error.
    root = tmp_path / "data"
    cta, ncct, mask = _good_case(root, "a")
    write_volume(cta, root / "cta_only" / "cta.nii.gz")
    write_volume(ncct, root / "ncct_only" / "ncct.nii.gz")
    write_volume(mask, root / "ncct_only" / "clot.nii.gz", mask=True)
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ERROR" not in out and "Traceback" not in out
    assert "WARNING cta_only:" in out and "only a CTA, no NCCT" in out
    assert "WARNING ncct_only:" in out and "only an NCCT, no CTA" in out
    assert main(["check", str(root), "--strict"]) == 1
