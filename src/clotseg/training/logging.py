"""Per-epoch metrics (``metrics.csv``), training curves (``curves.png``) and ``train.log``.

All three are rewritten atomically after every epoch (they are small), so a killed run
leaves complete files that match its last checkpoint.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from clotseg.io.atomic import write_bytes, write_text
from clotseg.runs import COLUMNS, read_metrics, write_metrics  # noqa: F401  (re-exported)


def curves_png(rows: list[dict]) -> bytes:
    """Training loss and validation Dice against epoch as PNG bytes (matplotlib, Agg).

    Why one function: ``train`` writes it as ``curves.png`` after every epoch and the
    report draws the same figure from ``metrics.csv`` when ``curves.png`` is missing.

    Args:
        rows: ``metrics.csv`` rows (:func:`read_metrics`); missing values are gaps.

    Examples:
        >>> png = curves_png([{"epoch": 1, "train_loss": 0.9, "val_dice": 0.2, "best": True}])
        >>> png[:4]
        b'\\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(ep, [_value(r, "train_loss") for r in rows], "o-", color="tab:blue", ms=3,
             label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ep, [_value(r, "val_dice") for r in rows], "s-", color="tab:red", ms=3,
             label="validation Dice")
    ax2.set_ylabel("validation Dice (3D, per patient)", color="tab:red")
    ax2.set_ylim(0, 1)
    best = [r for r in rows if r.get("best")]
    if best:
        ax2.axvline(best[-1]["epoch"], color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return float("nan") if value is None else value


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Write :func:`curves_png` of ``rows`` to ``path`` atomically (``RUN/curves.png``).

    Args:
        path: target PNG file.
        rows: ``metrics.csv`` rows, one per epoch.
    """
    write_bytes(path, curves_png(rows))


class RunLog:
    """``RUN/train.log``: time-stamped lines, kept across resumed runs, rewritten
    atomically on every :meth:`write` (no half-written log after a kill)."""

    def __init__(self, path: Path, enabled: bool = True, resume: bool = False):
        self.path, self.enabled = Path(path), enabled
        self.lines: list[str] = []
        if enabled and resume and self.path.is_file():
            self.lines = self.path.read_text().splitlines()

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.lines.extend(f"{stamp}  {line}" for line in message.splitlines())
        write_text(self.path, "\n".join(self.lines) + "\n")
