"""Patient-level splits (never slices of one patient in two sets), saved as splits.json.

``kfold``: a fixed held-out test set (``test_fraction``), the rest in ``n_folds`` folds;
fold ``k`` validates on fold k and trains on the others. ``random``: the original random
60/20/20 split (seed 1 in the original).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import write_text


def make_splits(case_ids: list[str], *, scheme: str = "kfold", n_folds: int = 5, fold: int = 0,
                test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """Split case ids into train/val/test; deterministic in ``seed``."""
    ids = sorted(case_ids)
    if len(ids) < 3:
        raise ClotsegError(f"need at least 3 cases to split into train/val/test, got {len(ids)}")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_test = max(1, int(round(test_fraction * len(ids)))) if test_fraction > 0 else 0
    test, rest = order[:n_test], order[n_test:]
    if scheme == "random":
        n_val = max(1, int(round(val_fraction * len(ids))))
        val, train = rest[:n_val], rest[n_val:]
    elif scheme == "kfold":
        n_folds = max(2, min(n_folds, len(rest)))
        if not 0 <= fold < n_folds:
            raise ClotsegError(f"--fold {fold} out of range for {n_folds} folds")
        folds = [rest[i::n_folds] for i in range(n_folds)]
        val = folds[fold]
        train = [c for i, f in enumerate(folds) if i != fold for c in f]
    else:
        raise ClotsegError(f"unknown split scheme {scheme!r} (kfold or random)")
    if not train:
        raise ClotsegError("no training cases left after the split")
    return {"scheme": scheme, "seed": seed, "n_folds": n_folds if scheme == "kfold" else None,
            "fold": fold if scheme == "kfold" else None,
            "train": sorted(train), "val": sorted(val), "test": sorted(test)}


def save_splits(path: str | Path, splits: dict) -> Path:
    return write_text(path, json.dumps(splits, indent=2))


def load_splits(path: str | Path, known: list[str] | None = None) -> dict:
    """Read a splits.json; with ``known``, check that every listed case exists."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClotsegError(f"{path}: cannot read splits ({exc})") from None
    for key in ("train", "val", "test"):
        if not isinstance(splits.get(key), list):
            raise ClotsegError(f"{path}: missing list {key!r}")
    seen: set[str] = set()
    for key in ("train", "val", "test"):
        dup = seen & set(splits[key])
        if dup:
            raise ClotsegError(f"{path}: case(s) {sorted(dup)} in more than one split")
        seen |= set(splits[key])
    if known is not None:
        missing = seen - set(known)
        if missing:
            raise ClotsegError(f"{path}: case(s) not in the dataset: {sorted(missing)[:5]}")
    return splits
