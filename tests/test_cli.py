"""Command-line contract: help, exit codes, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from clotseg.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name, _ in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", [n for n, _ in COMMANDS])
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: clotseg" in capsys.readouterr().out


def test_bad_usage_is_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check"])  # missing DATA
    assert info.value.code == 2
    assert main([]) == 2


def test_help_and_check_do_not_import_torch(tmp_path):
    code = ("import sys; from clotseg.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"main(['check', {str(tmp_path)!r}])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'monai' not in sys.modules, 'monai imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_command_takes_quiet_and_preprocess_renamed_spacing(tmp_path, capsys):
    """--quiet is accepted everywhere; preprocess --spacing still works, with a warning."""
    import warnings

    for name, _ in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--quiet", "--help"])
        assert exc.value.code == 0
        assert "--quiet" in capsys.readouterr().out
    from clotseg.synth import write_cohort

    write_cohort(tmp_path / "d", 1, seed=0, size="small", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["preprocess", str(tmp_path / "d"), str(tmp_path / "p"), "--quiet",
                     "--no-register", "--roi", "none", "--spacing", "1.5", "1.5", "1.5"]) == 0
    assert any("--target-spacing" in str(w.message) for w in caught)
    from clotseg.io.layouts import discover

    np.testing.assert_allclose(discover(tmp_path / "p").cases[0].load().cta.spacing, 1.5,
                               atol=1e-6)
    assert main(["preprocess", str(tmp_path / "d"), str(tmp_path / "p2"), "--spacing", "1",
                 "1", "1", "--target-spacing", "1", "1", "1"]) == 2


def test_mps_device_is_understood():
    import torch

    from clotseg.inference.predictor import resolve_device

    if torch.backends.mps.is_available():  # pragma: no cover - Apple silicon only
        assert resolve_device("mps") == "mps"
    else:
        from clotseg.errors import ClotsegError

        with pytest.raises(ClotsegError, match="no Apple MPS device"):
            resolve_device("mps")


def test_value_flags_hold_for_one_command_only(tmp_path, monkeypatch, capsys):
    """--replace-nonfinite / --mask-255 reach the command (and its workers) through the
    environment; a later main() in the same process must not inherit them."""
    import os

    monkeypatch.delenv("CLOTSEG_REPLACE_NONFINITE", raising=False)
    monkeypatch.delenv("CLOTSEG_MASK_255", raising=False)
    seen = {}

    def fake_evaluate(pred, data, out, cases, **kw):
        seen["replace"] = os.environ.get("CLOTSEG_REPLACE_NONFINITE")
        seen["mask255"] = os.environ.get("CLOTSEG_MASK_255")
        raise FileNotFoundError(2, "no such folder", str(pred))

    monkeypatch.setattr("clotseg.metrics.evaluate.evaluate_dirs", fake_evaluate)
    code = main(["evaluate", str(tmp_path / "p"), str(tmp_path / "d"), "--out",
                 str(tmp_path / "e.csv"), "--replace-nonfinite", "-1000", "--mask-255"])
    assert code == 1
    assert seen == {"replace": "-1000.0", "mask255": "1"}
    assert "CLOTSEG_REPLACE_NONFINITE" not in os.environ
    assert "CLOTSEG_MASK_255" not in os.environ
