"""Patient-level splits (never slices of one patient in two sets), saved as splits.json.

``kfold``: a fixed held-out test set (``test_fraction``), the rest in ``n_folds`` folds;
fold ``k`` validates on fold k and trains on the others. ``random``: the original random
60/20/20 split (seed 1 in the original).

Stratified (``strata``, from ``data.stratify``): each group of cases (with a clot /
clot-free) is shared out over test, validation and training in proportion. Without it a
cohort with few clot-free patients can leave the validation set with none, and then
everything chosen on it (best epoch, threshold, minimum component size, the review
threshold) is chosen without ever seeing a patient whom a speck would make a false
positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.io.atomic import write_text

#: Stratum names of :func:`clot_strata`.
WITH_CLOT, CLOT_FREE, NO_MASK = "clot", "clot-free", "no mask"


def make_splits(case_ids: list[str], *, scheme: str = "kfold", n_folds: int = 5, fold: int = 0,
                test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 0,
                strata: dict[str, str] | None = None) -> dict:
    """Split case ids into train/val/test; deterministic in ``seed``.

    ``strata`` (case id -> group name, for every case) shares each group out over the
    three sets in proportion (module docstring); without it the split is the plain random
    one of earlier versions, unchanged.

    Examples:
        >>> ids = [f"c{i}" for i in range(10)]
        >>> groups = {c: ("clot-free" if c in ("c0", "c1") else "clot") for c in ids}
        >>> s = make_splits(ids, n_folds=2, test_fraction=0.0, strata=groups)
        >>> [sum(groups[c] == "clot-free" for c in s[k]) for k in ("train", "val")]
        [1, 1]
    """
    ids = sorted(case_ids)
    if len(ids) < 3:
        raise ClotsegError(f"need at least 3 cases to split into train/val/test, got {len(ids)}")
    if scheme not in ("kfold", "random"):
        raise ClotsegError(f"unknown split scheme {scheme!r} (kfold or random)")
    rng = np.random.default_rng(seed)
    groups = _groups(ids, strata, rng)
    n_test = max(1, int(round(test_fraction * len(ids)))) if test_fraction > 0 else 0
    test, groups = _take(groups, n_test, rng)
    if scheme == "random":
        n_val = max(1, int(round(val_fraction * len(ids))))
        val, groups = _take(groups, n_val, rng)
        train = [c for g in groups for c in g]
    else:
        rest = sum(len(g) for g in groups)
        n_folds = max(2, min(n_folds, rest))
        if not 0 <= fold < n_folds:
            raise ClotsegError(f"--fold {fold} out of range for {n_folds} folds")
        # group after group dealt round the folds, the rarest first: it starts at fold 0,
        # so the default validation fold gets a clot-free patient even when there are
        # fewer of them than folds
        dealt = [c for g in sorted(groups, key=len) for c in g]
        folds = [dealt[i::n_folds] for i in range(n_folds)]
        val = folds[fold]
        train = [c for i, f in enumerate(folds) if i != fold for c in f]
    if not train:
        raise ClotsegError("no training cases left after the split")
    out = {"scheme": scheme, "seed": seed, "n_folds": n_folds if scheme == "kfold" else None,
           "fold": fold if scheme == "kfold" else None,
           "train": sorted(train), "val": sorted(val), "test": sorted(test)}
    if strata is not None:
        out["stratified_by"] = {name: sum(strata[c] == name for c in ids)
                                for name in sorted(set(strata.values()))}
    return out


def _groups(ids: list[str], strata: dict[str, str] | None, rng: np.random.Generator
            ) -> list[list[str]]:
    """The cases in random order, as one group, or one group per stratum (sorted names)."""
    order = [ids[i] for i in rng.permutation(len(ids))]
    if strata is None:
        return [order]
    unknown = [c for c in ids if c not in strata]
    if unknown:
        raise ClotsegError(f"no stratum for case(s) {unknown[:5]}")
    return [[c for c in order if strata[c] == name] for name in sorted(set(strata.values()))]


def _take(groups: list[list[str]], n: int, rng: np.random.Generator
          ) -> tuple[list[str], list[list[str]]]:
    """``n`` cases from the front of the groups, each group giving its proportional share
    (largest remainders, ties at random); returns them and what is left of each group."""
    if len(groups) == 1:
        return groups[0][:n], [groups[0][n:]]
    total = sum(len(g) for g in groups)
    quota = np.array([n * len(g) / total for g in groups])
    counts = np.floor(quota).astype(int)
    spare = n - int(counts.sum())
    order = np.lexsort((rng.random(len(groups)), -(quota - counts)))
    counts[order[:spare]] += 1
    taken = [c for g, k in zip(groups, counts) for c in g[:k]]
    return taken, [g[k:] for g, k in zip(groups, counts)]


def clot_strata(cases, progress: bool = False) -> dict[str, str]:
    """Case id -> :data:`WITH_CLOT` or :data:`CLOT_FREE`, from each case's mask (read and
    checked as training reads it: a mask that is not binary is an error naming its file);
    :data:`NO_MASK` for a case without one (it can still be a test case)."""
    from clotseg.io.values import binary_mask

    items = list(cases)
    if progress and len(items) > 20:
        from tqdm import tqdm

        items = tqdm(items, desc="reading masks for a stratified split", unit="case",
                     leave=False)
    strata = {}
    for case in items:
        if case.mask is None:
            strata[case.case_id] = NO_MASK
            continue
        mask = binary_mask(case.read("mask"), case.mask)
        strata[case.case_id] = WITH_CLOT if np.asarray(mask.array).any() else CLOT_FREE
    return strata


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
