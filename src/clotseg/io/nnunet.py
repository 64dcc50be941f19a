"""The nnU-Net v2 raw dataset layout, as ``clotseg export-nnunet`` writes it.

``OUT/Dataset<NNN>_<name>/``: ``imagesTr/<case>_0000.nii.gz`` (CTA, as read),
``imagesTr/<case>_0001.nii.gz`` (NCCT on the CTA grid: nnU-Net needs every channel of a
case on one grid), ``labelsTr/<case>.nii.gz`` (0/1 clot mask), cases without a mask in
``imagesTs/``, and ``dataset.json`` naming the channels CTA and NCCT (which is also how
clotseg reads the dataset back, :func:`clotseg.io.layouts.nnunet_channels`).

Every file is read back and checked to have the CTA's exact grid before it gets its
name (:func:`clotseg.io.ongrid.write_on_grid`); :func:`assembling` builds the dataset
under a temporary folder name and renames it when complete, so a failure leaves no half
dataset behind. This module is the layout only: putting the NCCT on the CTA grid is
preprocessing, so the export itself (which cases, in which order, resampled how) is
:func:`clotseg.commands.export_nnunet.export_nnunet`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, DatasetError
from clotseg.io.atomic import write_text
from clotseg.io.layouts import CaseRef
from clotseg.io.ongrid import write_on_grid
from clotseg.io.volume import Volume

CHANNELS = {"0": "CTA", "1": "NCCT"}


def dataset_folder(out: str | Path, dataset_id: int, name: str) -> Path:
    """``out/Dataset<NNN>_<name>``, after checking the id and name nnU-Net accepts."""
    if not 1 <= dataset_id <= 999:
        raise DatasetError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '_' or '-'")
    return Path(out) / f"Dataset{dataset_id:03d}_{name}"


@contextlib.contextmanager
def assembling(target: Path) -> Iterator[Path]:
    """A fresh temporary folder next to ``target`` to write the dataset into; renamed to
    ``target`` when the block completes, removed when it fails."""
    work = target.with_name(f".{target.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        yield work
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def case_label(case: CaseRef, cta: Volume) -> Volume | None:
    """The case's clot mask as an nnU-Net label (uint8 0/1), None when it has no mask;
    refused when it does not lie on the CTA grid (nnU-Net pairs them voxel for voxel)."""
    if case.mask is None:
        return None
    mask = case.read("mask")
    if not mask.grid.same_as(cta.grid):
        raise ClotsegError(f"{case.mask}: mask grid differs from the CTA grid "
                           f"({'; '.join(mask.grid.differences(cta.grid))})")
    return mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))


def write_case(folder: Path, case_id: str, cta: Volume, ncct: Volume,
               label: Volume | None) -> bool:
    """Write one case's channels (``ncct`` already on the CTA grid) and, when it has one,
    its label, each checked against the CTA grid; True when it is a training case."""
    cta_path, ncct_path, label_path = case_paths(folder, case_id, label is not None)
    write_on_grid(cta, cta_path, cta.grid, mask=False)
    write_on_grid(ncct, ncct_path, cta.grid, mask=False)
    if label is not None:
        write_on_grid(label, label_path, cta.grid, mask=True)
    return label is not None


def case_paths(folder: Path, case_id: str, labelled: bool) -> tuple[Path, Path, Path | None]:
    """Where one case's CTA channel, NCCT channel and label go (no label for a test case)."""
    images = folder / ("imagesTr" if labelled else "imagesTs")
    label = folder / "labelsTr" / f"{case_id}.nii.gz" if labelled else None
    return images / f"{case_id}_0000.nii.gz", images / f"{case_id}_0001.nii.gz", label


def remove_case(folder: Path, case_id: str) -> None:
    """Delete whatever of one case was written (a case that failed half-way)."""
    for labelled in (True, False):
        for path in case_paths(folder, case_id, labelled):
            if path is not None:
                path.unlink(missing_ok=True)


def write_dataset_json(folder: Path, name: str, description: str, n_train: int) -> None:
    """``dataset.json``: channels CTA and NCCT, labels background/clot, NIfTI files."""
    write_text(folder / "dataset.json", json.dumps({
        "name": name, "description": description,
        "channel_names": CHANNELS, "labels": {"background": 0, "clot": 1},
        "numTraining": n_train, "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO"}, indent=2))
