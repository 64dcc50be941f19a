"""Writing a dataset as an nnU-Net v2 raw dataset (``clotseg export-nnunet``).

``OUT/Dataset<NNN>_<name>/``: ``imagesTr/<case>_0000.nii.gz`` (CTA, as read),
``imagesTr/<case>_0001.nii.gz`` (NCCT on the CTA grid: nnU-Net needs every channel of a
case on one grid), ``labelsTr/<case>.nii.gz`` (0/1 clot mask), cases without a mask in
``imagesTs/``, and ``dataset.json`` naming the channels CTA and NCCT (which is also how
clotseg reads the dataset back, :func:`clotseg.io.layouts.nnunet_channels`).

Every file is read back and checked to have the CTA's exact grid before it gets its
name; the dataset is assembled under a temporary folder name and renamed when complete,
so a failure leaves no half dataset behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, DatasetError
from clotseg.io.atomic import write_text

CHANNELS = {"0": "CTA", "1": "NCCT"}


def dataset_folder(out: str | Path, dataset_id: int, name: str) -> Path:
    if not 1 <= dataset_id <= 999:
        raise DatasetError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '_' or '-'")
    return Path(out) / f"Dataset{dataset_id:03d}_{name}"


def export_nnunet(data: str | Path, out: str | Path, dataset_id: int, *, name: str = "Clot",
                  spacing: tuple[float, float, float] | None = None,
                  progress: bool = False) -> tuple[Path, int, int]:
    """Write ``data`` (any layout) as an nnU-Net raw dataset; returns (folder, number of
    training cases, number of test cases)."""
    from clotseg.io.layouts import discover

    target = dataset_folder(out, dataset_id, name)
    if target.exists():
        raise DatasetError(f"{target}: already exists; remove it or choose another --id")
    index = discover(data, spacing=spacing)
    if not index.cases:
        raise DatasetError(f"{data}: no cases found")
    work = target.with_name(f".{target.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    cases = index.cases
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="export-nnunet", unit="case")
    n_train = n_test = 0
    try:
        for case in cases:
            labelled = _write_case(case, work)
            n_train += labelled
            n_test += not labelled
        write_text(work / "dataset.json", json.dumps({
            "name": name, "description": f"clot segmentation, exported by clotseg from {data}",
            "channel_names": CHANNELS, "labels": {"background": 0, "clot": 1},
            "numTraining": n_train, "file_ending": ".nii.gz",
            "overwrite_image_reader_writer": "SimpleITKIO"}, indent=2))
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, n_train, n_test


def _write_case(case, folder: Path) -> bool:
    """Write one case; True when it has a mask (a training case)."""
    from clotseg.inference.predictor import load_case, ncct_on_cta_grid, write_on_grid

    vols = load_case(case)
    cta = vols.cta
    mask = case.read("mask") if case.mask is not None else None
    if mask is not None and not mask.grid.same_as(cta.grid):
        raise ClotsegError(f"{case.mask}: mask grid differs from the CTA grid "
                           f"({'; '.join(mask.grid.differences(cta.grid))})")
    images = folder / ("imagesTr" if mask is not None else "imagesTs")
    ncct = ncct_on_cta_grid(cta, vols.ncct, case.case_id)
    write_on_grid(cta, images / f"{case.case_id}_0000.nii.gz", cta.grid, mask=False)
    write_on_grid(ncct, images / f"{case.case_id}_0001.nii.gz", cta.grid, mask=False)
    if mask is not None:
        binary = mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))
        write_on_grid(binary, folder / "labelsTr" / f"{case.case_id}.nii.gz", cta.grid,
                      mask=True)
    return mask is not None
