"""Reading one case's scans, with a DICOM series chosen by its SeriesInstanceUID.

:meth:`clotseg.io.layouts.CaseRef.load` reads the series of each modality that a DICOM
folder holds; ``predict --cta-series/--ncct-series`` name one by UID instead.
:func:`load_case` is that reading for every command that reads a case's CTA and NCCT
without its mask (``predict``, ``measure``, ``export-nnunet``).
"""

from __future__ import annotations

from pathlib import Path

from clotseg.errors import ClotsegError
from clotseg.io.layouts import MODALITIES, CaseRef, CaseVolumes
from clotseg.io.volume import Volume

__all__ = ["load_case"]


def load_case(case: CaseRef, series: dict[str, str] | None = None) -> CaseVolumes:
    """Read a case's CTA and NCCT (no mask), values checked as
    :meth:`clotseg.io.layouts.CaseRef.load` checks them; a modality the case has no scan
    of is None in the result (one at most: discovery makes a case with neither a problem).

    Mostly ``case.load(with_mask=False)``, with two differences kept on purpose: a DICOM
    series can be chosen by its SeriesInstanceUID (``series``: modality → UID, the
    ``--cta-series``/``--ncct-series`` options, which ``CaseRef`` does not know), and a
    case with problems found at discovery fails with those problems alone (no ``case
    <id>:`` prefix), the message ``measure`` and ``nnunet`` callers have always shown.
    """
    from clotseg.io.values import distinct_scans, usable_ct

    series = series or {}
    if case.problems:
        raise ClotsegError("; ".join(case.problems))
    if not any(series.get(name) for name in MODALITIES):
        return case.load(with_mask=False)
    vols = {name: _read_modality(case, name, series.get(name)) for name in MODALITIES}
    checked = {name: None if vol is None else usable_ct(vol, getattr(case, name), name.upper())
               for name, vol in vols.items()}
    distinct_scans(checked["cta"], checked["ncct"], case.ncct)
    return CaseVolumes(case.case_id, checked["cta"], checked["ncct"], None)


def _read_modality(case: CaseRef, name: str, uid: str | None) -> Volume | None:
    """One modality: from a DICOM folder the series ``uid`` (None: the one that is this
    modality), else the file as :meth:`CaseRef.read` reads it; None when the case has
    no scan of this modality (a one-modality case)."""
    from clotseg.io.dicom import read_dicom_series

    path = getattr(case, name)
    if path is None:
        return None
    if path is not None and Path(path).is_dir():
        return read_dicom_series(path, uid, kind=name)
    return case.read(name)
