"""`clotseg evaluate PRED DATA --out FILE`: per-case metrics CSV, summary JSON, table."""

from __future__ import annotations

import argparse

from clotseg.commands import spacing_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", help="folder with predicted masks <case>.nii.gz")
    parser.add_argument("data", help="dataset with reference masks (any supported layout)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="per-case CSV; the summary goes to FILE with .json")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="only the cases of this split of --run's splits.json")
    parser.add_argument("--run", help="run folder whose splits.json --split refers to")
    spacing_arg(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clotseg.errors import UsageError
    from clotseg.metrics.evaluate import evaluate_dirs, format_table

    cases = None
    if args.split:
        if not args.run:
            raise UsageError("--split needs --run RUN (the run whose splits.json to use)")
        from clotseg.data.splits import load_splits

        cases = load_splits(Path(args.run) / "splits.json")[args.split]
    rows, summary = evaluate_dirs(args.pred, args.data, args.out, cases,
                                  spacing=tuple(args.spacing) if args.spacing else None,
                                  progress=True)
    print(format_table(rows, summary))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0
