"""Per-epoch metrics (``metrics.csv``) and training curves (``curves.png``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from clotseg.io.atomic import write_bytes, write_text

COLUMNS = ["epoch", "train_loss", "val_dice", "lr", "seconds", "slices_per_s", "best"]


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for r in csv.DictReader(path.open()):
        rows.append({k: (int(v) if k == "epoch" else (v == "True" if k == "best" else
                                                       float(v) if v else float("nan")))
                     for k, v in r.items()})
    return rows


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Training loss and validation Dice against epoch (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(ep, [r["train_loss"] for r in rows], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ep, [r["val_dice"] for r in rows], "s-", color="tab:red", label="val Dice (3D)")
    ax2.set_ylabel("validation Dice (3D, per patient)", color="tab:red")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
