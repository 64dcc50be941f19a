"""CSV tables as clotseg writes them: one cell format, safe text, atomic files.

Every CSV of the package (``clots.csv`` and ``cases.csv`` of :mod:`clotseg.measure`,
the per-case table of :mod:`clotseg.metrics.evaluate`, the problem list of
:mod:`clotseg.validate`) is read by people in spreadsheets and by scripts, so all of them
share these rules:

* floats with 4 decimals, a non-finite float as ``nan`` (kept visible), None as an empty
  cell, booleans as ``True``/``False``;
* text that a spreadsheet would run as a formula is neutralised (:func:`csv_cell`);
* the file is written atomically (:func:`clotseg.io.atomic.write_text`), ``\\n`` line
  ends, a header row.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clotseg.io.atomic import write_text

#: First characters that make a spreadsheet treat a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """Text for a CSV cell that spreadsheets show as text, never run as a formula: a
    leading ``= + - @`` (or tab / carriage return) gets a ``'`` in front (the OWASP
    advice for CSV injection). A cell that is a number as text (``-12.5``, kept from an
    earlier table) is left alone: a spreadsheet reads it as that number, not a formula.

    Args:
        value: the cell's text.

    Examples:
        >>> csv_cell("=HYPERLINK(1)"), csv_cell("-12.5"), csv_cell("case_01")
        ("'=HYPERLINK(1)", '-12.5', 'case_01')
    """
    text = str(value)
    if not text.startswith(_FORMULA_START) or _is_number(text):
        return text
    return "'" + text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell_text(cell: str) -> str:
    """The text :func:`csv_cell` was given (drops the ``'`` it put in front).

    Args:
        cell: a cell as read back from a CSV file.

    Examples:
        >>> csv_cell_text("'=SUM(A1)"), csv_cell_text("'quoted")
        ('=SUM(A1)', "'quoted")
    """
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell


def format_cell(value: Any) -> str:
    """One CSV cell: floats with 4 decimals (``nan`` kept visible), None as empty, text
    through :func:`csv_cell`.

    Args:
        value: a number, bool, None or text.

    Examples:
        >>> [format_cell(v) for v in (1 / 3, float("inf"), None, True, 7, "@x")]
        ['0.3333', 'nan', '', 'True', '7', "'@x"]
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else f"{float(value):.4f}"
    if isinstance(value, str):
        return csv_cell(value)  # a case id like "=HYPERLINK(...)" stays text
    return str(value)


def csv_text(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """CSV text of ``rows``: a header of ``columns``, then one line per row with its cells
    in :func:`format_cell`'s format; keys outside ``columns`` are ignored.

    Args:
        rows: one dict per line.
        columns: the columns, in order.

    Examples:
        >>> csv_text([{"case_id": "a", "volume_mm3": 2.0, "other": 1}], ["case_id", "volume_mm3"])
        'case_id,volume_mm3\\na,2.0000\\n'
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format_cell(v) for k, v in row.items()})
    return buf.getvalue()


def write_csv(path: str | Path, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    """Write :func:`csv_text` of ``rows`` to ``path`` atomically.

    Args:
        path: the CSV file; its folder is created.
        rows: one dict per line.
        columns: the columns, in order.

    Examples:
        >>> import tempfile
        >>> p = write_csv(Path(tempfile.mkdtemp()) / "t.csv", [{"n": 1}], ["n"])
        >>> p.read_text()
        'n\\n1\\n'
    """
    return write_text(path, csv_text(rows, columns))
