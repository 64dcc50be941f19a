"""`clotseg export-nnunet DATA OUT --id N`: a dataset as an nnU-Net v2 raw dataset.

The layout and its checked writing are :mod:`clotseg.io.nnunet`; this command adds what
lies above I/O: the NCCT put on the CTA grid (:func:`clotseg.preprocess.ncct.resample_ncct`,
as is when it already lies on it), since nnU-Net needs every channel of a case on one grid.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
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
    res = export_nnunet(
        args.data, args.out, args.id, name=args.name,
        spacing=tuple(args.spacing) if args.spacing else None, progress=args.progress)
    print(f"{res.n_train} training case(s) (imagesTr + labelsTr), {res.n_test} without mask "
          f"(imagesTs) -> {res.folder}")
    for case_id, why in res.failed.items():
        print(f"FAILED {case_id}: {why}", file=sys.stderr)
    if res.failed:
        print(f"{len(res.failed)} case(s) left out of {res.folder}", file=sys.stderr)
    return 1 if res.failed else 0


@dataclass
class Export:
    """What ``export_nnunet`` wrote: the dataset folder, its case counts, and each case
    left out with the reason."""

    folder: Path
    n_train: int = 0
    n_test: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def export_nnunet(data: str | Path, out: str | Path, dataset_id: int, *, name: str = "Clot",
                  spacing: tuple[float, float, float] | None = None,
                  progress: bool = False) -> Export:
    """Write ``data`` (any layout) as an nnU-Net raw dataset.

    A case that cannot be read or written (an unreadable scan, a mask on another grid, a
    missing channel) is left out with its reason, and the others are exported: one bad
    case should not cost a cohort's export. The dataset folder appears only when complete
    (written under a temporary name); when no case could be exported, or when writing
    fails for a reason outside the cases (a full disk), nothing is left behind.
    """
    from clotseg.errors import DatasetError
    from clotseg.inference.cases import reason
    from clotseg.io.layouts import discover
    from clotseg.io.nnunet import assembling, dataset_folder, remove_case, write_dataset_json

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
    res = Export(target)
    with assembling(target) as work:
        for case in cases:
            try:
                labelled = _export_case(case, work)
            except ClotsegError as exc:
                remove_case(work, case.case_id)
                res.failed[case.case_id] = reason(exc, case.case_id)[0]
                continue
            res.n_train += labelled
            res.n_test += not labelled
        if not res.n_train + res.n_test:
            first = next(iter(res.failed.items()))
            raise DatasetError(f"{data}: no case could be exported (e.g. {first[0]}: "
                               f"{first[1]}); nothing written")
        description = f"clot segmentation, exported by clotseg from {data}"
        if res.failed:
            description += f"; left out: {', '.join(res.failed)}"
        write_dataset_json(work, name, description, res.n_train)
    return res


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
