"""Formatting and small readers shared by the report's parts: numbers with a dash for
missing values, durations, PNG ``data:`` URIs, CSV and JSON files read as text."""

from __future__ import annotations

import base64
import csv
import json
import math
from pathlib import Path
from typing import Any

from clotseg.errors import ClotsegError

DASH = "–"


def as_float(value: Any) -> float | None:
    """A finite float from a CSV cell or JSON value, else None ("", "nan", text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(value: Any, decimals: int | None = 3) -> str:
    """Numbers with ``decimals`` places, missing/NaN as a dash, anything else as text."""
    if decimals is None:
        return DASH if value in (None, "") else str(value)
    f = as_float(value)
    if f is None:
        return DASH if value in (None, "") or str(value).lower() == "nan" else str(value)
    return f"{f:.{decimals}f}"


def fmt_pct(value: Any) -> str:
    """A fraction as a whole percentage (``0.5`` → ``50 %``), missing as a dash."""
    f = as_float(value)
    return DASH if f is None else f"{100 * f:.0f} %"


def fmt_duration(seconds: float | None) -> str:
    """Seconds as ``M min SS s`` or ``H h MM min``, missing as a dash."""
    if seconds is None:
        return DASH
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def data_uri(png: bytes) -> str:
    """Embed PNG bytes as a ``data:`` URI (the report never links to files)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dictionaries of strings; a clear error if unreadable."""
    try:
        from clotseg.io.tables import csv_cell_text

        with path.open(newline="", encoding="utf-8") as f:
            return [{k: csv_cell_text(v) if isinstance(v, str) else v for k, v in r.items()}
                    for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClotsegError(f"{path}: cannot read CSV ({exc})") from None


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when the file is absent or holds no object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClotsegError(f"{path}: cannot read JSON ({exc})") from None
    return data if isinstance(data, dict) else {}
