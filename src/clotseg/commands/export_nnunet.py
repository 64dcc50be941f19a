"""`clotseg export-nnunet DATA OUT --id N`: a dataset as an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse

from clotseg.commands import spacing_arg


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
    from clotseg.io.nnunet import export_nnunet

    folder, n_train, n_test = export_nnunet(
        args.data, args.out, args.id, name=args.name,
        spacing=tuple(args.spacing) if args.spacing else None, progress=args.progress)
    print(f"{n_train} training case(s) (imagesTr + labelsTr), {n_test} without mask "
          f"(imagesTs) -> {folder}")
    return 0
