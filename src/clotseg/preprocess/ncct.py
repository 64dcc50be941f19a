"""The NCCT on the CTA grid: registration (or none), then one resampling per alignment.

:func:`align_ncct` registers (or not, as the settings say) without resampling anything;
:class:`CtaGridNcct` resamples the NCCT onto the whole CTA grid at most once per alignment
for one case; :func:`ncct_on_cta_grid` does both for one call. ``predict`` uses one
:class:`CtaGridNcct` per case for its networks, for a preprocessing that only crops
(:func:`clotseg.preprocess.pipeline.preprocess_case`) and for measurements and previews;
the HTML report can call :func:`ncct_on_cta_grid` with a model's settings so that its NCCT
panels show what ``predict`` used. Re-exported by :mod:`clotseg.preprocess.pipeline`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clotseg.errors import ClotsegError
from clotseg.io.volume import Volume
from clotseg.preprocess.resample import resample_to_grid
from clotseg.preprocess.settings import PreprocessSettings
from clotseg.timing import stage

AIR_HU = -1000.0


@dataclass(frozen=True)
class NcctAlignment:
    """How the NCCT is brought onto the CTA: the registration's transform (SimpleITK,
    CTA point → NCCT point; None: the identity, no registration), its JSON summary for the
    record, and the notes the user must see (poor alignment)."""

    transform: Any = None
    registration: dict | None = None
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Equal for equal transforms ("" for the identity)."""
        if self.registration is None:
            return ""
        return json.dumps(self.registration.get("transform"), sort_keys=True)



def align_ncct(cta: Volume, ncct: Volume, settings: PreprocessSettings | None = None
               ) -> NcctAlignment:
    """Register the NCCT to the CTA when ``settings.register`` (else the identity); no
    volume is resampled here.

    Args:
        cta: the fixed image (its grid is never changed).
        ncct: the moving image, on any grid overlapping the CTA's.
        settings: only ``register`` matters; None means the defaults (register).

    Examples:
        >>> import numpy as np
        >>> from clotseg.io.volume import Volume
        >>> v = Volume(np.zeros((4, 4, 4), np.int16), (1.0, 1.0, 1.0))
        >>> align_ncct(v, v, PreprocessSettings(register=False)).transform is None
        True
    """
    settings = settings or PreprocessSettings()
    if not settings.register:
        return NcctAlignment()
    from clotseg.preprocess.register import register_rigid

    try:
        res = register_rigid(cta, ncct, warn=False)
    except ValueError as exc:
        raise ClotsegError(str(exc)) from None
    notes = () if res.alignment_ok else (f"NCCT-to-CTA registration: {res.message}",)
    return NcctAlignment(res.transform, res.info(), notes)


def resample_ncct(cta: Volume, ncct: Volume, transform: Any = None, case_id: str = "case"
                  ) -> Volume:
    """The NCCT on the whole CTA grid: as is when it shares it (and no ``transform`` is
    given), else resampled (linear, −1000 HU outside the NCCT). ``transform`` maps CTA
    points to NCCT points (a registration's result, or its JSON form)."""
    if transform is None and ncct.grid.same_as(cta.grid):
        return ncct
    if not ncct.grid.overlaps(cta.grid):
        raise ClotsegError(f"case {case_id}: NCCT and CTA do not overlap in patient space "
                           "(different patients or broken geometry?)")
    return resample_to_grid(ncct, cta.grid, transform=transform, interpolation="linear",
                            default_value=AIR_HU)


class CtaGridNcct:
    """The NCCT of one case on the whole CTA grid, resampled at most once per alignment.

    ``predict`` makes one per case and hands :meth:`get` to every user of that volume: runs
    without preprocessing, a preprocessing that only crops (its NCCT is a box of this
    volume), and the measurements and previews after inference. Each resampling is timed
    as the ``ncct_on_cta`` stage (:mod:`clotseg.timing`).
    """

    def __init__(self, cta: Volume, ncct: Volume, case_id: str = "case") -> None:
        self.cta, self.ncct, self.case_id = cta, ncct, case_id
        self._made: dict[str, Volume] = {}

    def get(self, alignment: NcctAlignment | None = None) -> Volume:
        """The NCCT on the CTA grid through ``alignment`` (None: no registration)."""
        alignment = alignment or NcctAlignment()
        if alignment.key not in self._made:
            with stage("ncct_on_cta"):
                self._made[alignment.key] = resample_ncct(self.cta, self.ncct,
                                                          alignment.transform, self.case_id)
        return self._made[alignment.key]


def ncct_on_cta_grid(cta: Volume, ncct: Volume, settings: PreprocessSettings | None = None,
                     *, case_id: str = "case") -> Volume:
    """The NCCT on the whole CTA grid as ``predict`` uses it with a model trained on data
    preprocessed with ``settings``: registered when ``settings.register``, else only
    resampled (None: no preprocessing, so no registration).

    Args:
        cta: the CTA (reference grid).
        ncct: the NCCT on its own grid.
        settings: a model's preprocessing (``ModelSpec.preprocess``), or None.
        case_id: named in the error when the scans do not overlap.

    Examples:
        >>> import numpy as np
        >>> from clotseg.io.volume import Volume
        >>> cta = Volume(np.zeros((6, 6, 6), np.int16), (1.0, 1.0, 1.0))
        >>> ncct = Volume(np.zeros((3, 3, 3), np.int16), (2.0, 2.0, 2.0))
        >>> ncct_on_cta_grid(cta, ncct).shape
        (6, 6, 6)
    """
    alignment = align_ncct(cta, ncct, settings) if settings is not None else None
    return CtaGridNcct(cta, ncct, case_id).get(alignment)
