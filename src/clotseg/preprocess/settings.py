"""What ``clotseg preprocess`` does to each case (:class:`PreprocessSettings`).

Kept apart from :mod:`clotseg.preprocess.pipeline` so that :mod:`clotseg.runs` can hold
the settings in ``ModelSpec.preprocess`` without loading SimpleITK or SciPy: this module
needs NumPy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from clotseg.errors import UsageError

ROI_MODES = ("auto", "mask", "none")


@dataclass
class PreprocessSettings:
    """What ``clotseg preprocess`` does to each case.

    ``spacing`` (mm) is given for the patient's x (left-right), y (front-back) and z
    (up-down) axes and applied to the array axis closest to each, so every case gets the
    same physical resolution whatever its stored orientation; None keeps the CTA's spacing.
    ``roi_size_mm`` is a cube edge or (x, y, z) lengths; ``roi_margin_mm`` is added on
    every side.

    Examples:
        >>> s = PreprocessSettings(register=False, spacing=(0.8, 0.8, 1.0), roi="none")
        >>> s.to_dict()["spacing"]
        [0.8, 0.8, 1.0]
        >>> PreprocessSettings.from_dict(s.to_dict()) == s
        True
    """

    register: bool = True
    spacing: tuple[float, float, float] | None = None
    roi: str = "auto"
    roi_size_mm: float | tuple[float, float, float] = 120.0
    roi_margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.roi not in ROI_MODES:
            raise UsageError(f"--roi must be one of {', '.join(ROI_MODES)}, got {self.roi!r}")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or any(not np.isfinite(s) or s <= 0 for s in sp):
                raise UsageError(f"--spacing needs three positive numbers (mm), got {sp}")
            self.spacing = sp
        size = np.atleast_1d(np.asarray(self.roi_size_mm, dtype=float))
        if size.size not in (1, 3) or np.any(~np.isfinite(size)) or np.any(size <= 0):
            raise UsageError(f"--roi-size needs one or three positive lengths (mm), got "
                             f"{self.roi_size_mm}")
        self.roi_size_mm = float(size[0]) if size.size == 1 else tuple(float(s) for s in size)
        if not np.isfinite(self.roi_margin_mm) or self.roi_margin_mm < 0:
            raise UsageError(f"--roi-margin must be >= 0 mm, got {self.roi_margin_mm}")

    def to_dict(self) -> dict:
        """The JSON form (``preprocess.json`` ``settings``, ``model.json`` ``preprocess``)."""
        d = asdict(self)
        d["spacing"] = list(self.spacing) if self.spacing else None
        if isinstance(self.roi_size_mm, tuple):
            d["roi_size_mm"] = list(self.roi_size_mm)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSettings:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, values validated."""
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in known}
        if kw.get("spacing") is not None:
            kw["spacing"] = tuple(kw["spacing"])
        if isinstance(kw.get("roi_size_mm"), list):
            kw["roi_size_mm"] = tuple(kw["roi_size_mm"])
        return cls(**kw)
