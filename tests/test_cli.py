"""Command-line contract: help, exit codes, lazy imports."""

from __future__ import annotations

import subprocess
import sys

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
