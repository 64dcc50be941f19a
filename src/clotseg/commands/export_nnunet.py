"""`clotseg export-nnunet DATA OUT --id N`: a dataset as an nnU-Net v2 raw dataset.

The layout and its checked writing are :mod:`clotseg.io.nnunet`; this command adds what
lies above I/O: the NCCT put on the CTA grid (:func:`clotseg.preprocess.ncct.resample_ncct`,
as is when it already lies on it), since nnU-Net needs every channel of a case on one grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clotseg.commands import spacing_arg
from clotseg.errors import ClotsegError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset in any supported layout (run "
                        "`clotseg preprocess` first to export registered/cropped volumes)")
    parser.add_argument("out", metavar="OUT",
                        help="nnU-Net raw folder; the dataset goes to OUT/Dataset<N>_<name>/")
    parser.add_argument("--id", type=int, required=True, metavar="N",
                        help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default="Clot", help="dataset name (default Clot)")
    spacing_arg(parser)


def run(args: argparse.Namespace) -> int:
    folder, n_train, n_test = export_nnunet(
        args.data, args.out, args.id, name=args.name,
        spacing=tuple(args.spacing) if args.spacing else None, progress=args.progress)
    print(f"{n_train} training case(s) (imagesTr + labelsTr), {n_test} without mask "
          f"(imagesTs) -> {folder}")
    return 0


def export_nnunet(data: str | Path, out: str | Path, dataset_id: int, *, name: str = "Clot",
                  spacing: tuple[float, float, float] | None = None,
                  progress: bool = False) -> tuple[Path, int, int]:
    """Write ``data`` (any layout) as an nnU-Net raw dataset; returns (folder, number of
    training cases, number of test cases). Nothing is left behind when a case fails."""
    from clotseg.errors import DatasetError
    from clotseg.io.layouts import discover
    from clotseg.io.nnunet import assembling, dataset_folder, write_dataset_json

    target = dataset_folder(out, dataset_id, name)
    if target.exists():
        raise DatasetError(f"{target}: already exists; remove it or choose another --id")
    index = discover(data, spacing=spacing)
    if not index.cases:
        raise DatasetError(f"{data}: no cases found")
    cases = index.cases
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="export-nnunet", unit="case")
    n_train = n_test = 0
    with assembling(target) as work:
        for case in cases:
            labelled = _export_case(case, work)
            n_train += labelled
            n_test += not labelled
        write_dataset_json(work, name, f"clot segmentation, exported by clotseg from {data}",
                           n_train)
    return target, n_train, n_test


def _export_case(case, folder: Path) -> bool:
    """Read one case, put its NCCT on the CTA grid and write it; True when it has a mask
    (a training case)."""
    from clotseg.io.cases import load_case
    from clotseg.io.nnunet import case_label, write_case
    from clotseg.preprocess.ncct import resample_ncct

    vols = load_case(case)
    for name in ("cta", "ncct"):  # nnU-Net's dataset has both channels for every case
        if getattr(vols, name) is None:
            raise ClotsegError(f"case {case.case_id}: no {name.upper()}; an nnU-Net dataset "
                               "needs both channels")
    label = case_label(case, vols.cta)
    ncct = resample_ncct(vols.cta, vols.ncct, None, case.case_id)
    return write_case(folder, case.case_id, vols.cta, ncct, label)
