"""PNG figures decode and show the requested panels."""

from __future__ import annotations

import io

from PIL import Image

from clotseg.report.figures import clot_slices_png, mip_png
from clotseg.synth import make_case


def test_figures_decode(tmp_path):
    c = make_case(5, clot=True)
    data = clot_slices_png(c.cta, c.ncct, c.clot, c.clot, tmp_path / "s.png")
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.width > img.height > 100
    assert (tmp_path / "s.png").read_bytes() == data
    mip = Image.open(io.BytesIO(mip_png(c.cta, c.clot, None)))
    assert mip.width > 100 and mip.height > 100
