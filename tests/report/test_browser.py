"""The report in a real browser: headless Chromium opens it from disk, offline.

Checks that the page logs nothing to the console (no script errors, no blocked loads under
the report's Content-Security-Policy), that every embedded image decodes (the report's
inline script writes the number of broken images into ``<body data-broken-images>``,
read back with ``--dump-dom``) and that a screenshot can be taken.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clotseg.report.html import build_report
from tests.report.test_html import make_fake_run

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"headless browser check skipped: {CHROMIUM} is not installed "
                    "(apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    fake = make_fake_run(tmp_path_factory.mktemp("browser"))
    return build_report(fake["run"], fake["run"].parent / "report.html", pred=fake["pred"],
                        data=fake["data"], progress=False)


def _chromium(binary: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [str(binary), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
           "--v=0", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_loads_offline_without_errors(chromium, report, tmp_path):
    res = _chromium(chromium, tmp_path, "--dump-dom", report.resolve().as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, res.stdout[:500]
    assert 'data-broken-images="0"' in body.group(0), body.group(0)
    # curves + slices and MIP per case, and no <img> injected through a case id
    assert 'data-images="9"' in body.group(0), body.group(0)
    # Chromium prints every console message (errors, CSP violations) as a CONSOLE line.
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    assert "<script>alert" not in res.stdout  # the injected case id stayed text


def test_screenshot(chromium, report, tmp_path):
    shot = tmp_path / "report.png"
    res = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                    "--hide-scrollbars", report.resolve().as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    with Image.open(shot) as img:
        img.load()
        assert img.size == (1280, 2000)
        # the page is rendered (a dark header above a light body), not a blank frame
        grey = img.convert("L")
        assert grey.getpixel((20, 10)) < 80 and grey.getpixel((640, 1000)) > 0
        assert len(np.unique(np.asarray(grey))) > 20
