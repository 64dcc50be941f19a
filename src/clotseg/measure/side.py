"""Which side of the head a clot is on, in plain words, and a one-line description.

clotseg volumes carry ITK/LPS geometry (physical point = origin + direction @ (spacing *
index)), and in LPS the patient's **left is +x**. A clot's side therefore comes from its
centroid in physical coordinates — never from array indices, which flipped, permuted or
oblique storage directions would turn around — compared with the head's mid-sagittal
plane. That plane is not x = 0 in general (the scanner's origin is anywhere), so it is
estimated from the image (:mod:`clotseg.measure.midline`: the left-right centre of mass
of the head on the CTA, or on the NCCT for a case without a CTA, the head's outline
being the same in both scans; when the head is not wholly inside the field of view, as
in a region-of-interest scan, the plane that mirrors the CTA's paired arteries onto each
other). A clot whose centroid lies within :data:`MIDLINE_MM` of it (e.g. the basilar
artery) is called ``midline`` rather than guessed, and when no midline can be estimated,
or the image allows planes on which the clot's side would differ, the side is left
empty.
"""

from __future__ import annotations

import math

#: Clots whose centroid is closer than this (mm, along patient x) to the estimated
#: midline are "midline": the basilar artery's radius (≈ 1.5–2 mm) plus the uncertainty
#: of a centre-of-mass midline under small head yaw (a few degrees) and asymmetry.
MIDLINE_MM = 4.0

SIDES = ("left", "right", "midline")


def side_of(centroid_x_mm: float, midline_x_mm: float | tuple[float, float],
            tolerance_mm: float = MIDLINE_MM) -> str | None:
    """``"left"``, ``"right"`` or ``"midline"`` for a clot centroid at LPS x
    ``centroid_x_mm``; None when either value is unknown (NaN). LPS +x is the patient's
    left, so a centroid at larger x than the midline is on the left.

    ``midline_x_mm`` may be a ``(low, high)`` range of planes the image cannot tell apart
    (:class:`clotseg.measure.midline.Midline`): the side is named only when it is the same
    for every plane in the range, else None.

    Examples:
        >>> side_of(30.0, 2.0), side_of(-3.0, (-8.0, 2.0)), side_of(-3.0, (-20.0, 2.0))
        ('left', 'right', None)
    """
    if isinstance(midline_x_mm, (tuple, list)):
        low, high = float(midline_x_mm[0]), float(midline_x_mm[1])
    else:
        low = high = float(midline_x_mm)
    if not (math.isfinite(centroid_x_mm) and math.isfinite(low) and math.isfinite(high)):
        return None
    sides = {_side(centroid_x_mm - m, tolerance_mm) for m in (low, high)}
    return sides.pop() if len(sides) == 1 else None


def _side(offset: float, tolerance_mm: float) -> str:
    if abs(offset) <= tolerance_mm:
        return "midline"
    return "left" if offset > 0 else "right"


def describe_clot(row: dict) -> str:
    """A short sentence for one ``clots.csv`` row, e.g. ``"left clot, 14 mm long,
    pervious"``, from the fields the row has: ``side``, ``length_mm``, ``pervious``.

    Works on rows from :func:`clotseg.measure.clots.measure_case` and on rows read back
    from ``clots.csv`` (all cells text). Unknown fields are left out, never guessed; a
    row without a clot (``component`` 0) is ``"no clot"``. No arterial site is named:
    the measurements do not label one.
    """
    if _number(row.get("component")) == 0:
        return "no clot"
    side = str(row.get("side") or "").strip().lower()
    parts = [f"{side} clot" if side in SIDES else "clot"]
    length = _number(row.get("length_mm"))
    if length is not None and length > 0:
        parts.append(f"{length:.0f} mm long" if length >= 1 else "under 1 mm long")
    pervious = _flag(row.get("pervious"))
    if pervious is not None:
        parts.append("pervious" if pervious else "not pervious")
    return ", ".join(parts)


def _number(value) -> float | None:
    """A finite float from a number or its CSV text; None for empty, NaN or junk."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _flag(value) -> bool | None:
    """True/False from a bool or its CSV text (``True``/``False``); None when unknown."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "dtype") and value.dtype == bool:  # numpy bool
        return bool(value)
    text = str(value).strip().lower() if value is not None else ""
    return {"true": True, "false": False}.get(text)
