"""nnU-Net ``channel_names``: CTA/NCCT used by name, CT/CT in clotseg's order, anything else
a clear error (never a silent swap)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.errors import DatasetError
from clotseg.io.layouts import discover
from clotseg.io.readers import write_volume
from tests.helpers import DIRECTIONS, make_volume


def _dataset(root, channel_names, *, first="cta"):
    """One case whose channel 0000 holds ``first`` (cta: seed 1, ncct: seed 2)."""
    cta = make_volume(DIRECTIONS["identity"], seed=1)
    ncct = make_volume(DIRECTIONS["identity"], seed=2)
    a, b = (cta, ncct) if first == "cta" else (ncct, cta)
    write_volume(a, root / "imagesTr" / "c1_0000.nii.gz")
    write_volume(b, root / "imagesTr" / "c1_0001.nii.gz")
    if channel_names is not None:
        (root / "dataset.json").write_text(json.dumps({"channel_names": channel_names}))
    return cta, ncct


@pytest.mark.parametrize("names,first", [({"0": "CTA", "1": "NCCT"}, "cta"),
                                         ({"0": "NCCT", "1": "CTA"}, "ncct"),
                                         ({"0": "non-contrast CT", "1": "CT angiography"},
                                          "ncct"),
                                         ({"0": "CT", "1": "CT"}, "cta")])
def test_channels_used_by_name(tmp_path, recwarn, names, first):
    cta, ncct = _dataset(tmp_path, names, first=first)
    index = discover(tmp_path)
    assert not index.problems and not recwarn.list
    case = index["c1"].load()
    np.testing.assert_allclose(case.cta.array, cta.array)
    np.testing.assert_allclose(case.ncct.array, ncct.array)


@pytest.mark.parametrize("names", [{"0": "MR", "1": "CT"}, {"0": "CT"}, {"0": "a", "1": "b"},
                                   {"0": "CTA", "1": "CTA"}, {}])
def test_unclear_channels_are_an_error_naming_dataset_json(tmp_path, names):
    _dataset(tmp_path, names)
    with pytest.raises(DatasetError, match=r"dataset\.json.*(CTA|channel_names)"):
        discover(tmp_path)


def test_without_dataset_json_clotseg_order_is_assumed(tmp_path):
    cta, _ = _dataset(tmp_path, None)
    np.testing.assert_allclose(discover(tmp_path)["c1"].load().cta.array, cta.array)


def test_check_reports_unclear_channels_in_one_line(tmp_path, capsys):
    from clotseg.cli import main

    _dataset(tmp_path, {"0": "CT", "1": "perfusion"})
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json" in err[0] and "Traceback" not in err[0]
