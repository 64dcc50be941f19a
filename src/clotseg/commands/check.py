"""`clotseg check DATA`: validate a dataset and print every problem (file + reason)."""

from __future__ import annotations

import argparse

from clotseg.commands import spacing_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder (case folders, nnU-Net raw or original "
                                     ".npy layout) or a single case folder")
    spacing_arg(parser)
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 on warnings too (default: only on errors)")
    parser.add_argument("--csv", metavar="FILE", help="also write the problems as CSV")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings
    from pathlib import Path

    from clotseg.io.layouts import discover
    from clotseg.validate import check_dataset, summarize, write_report

    if args.csv:
        from clotseg.io.outputs import ensure_out_file

        ensure_out_file(args.csv, "--csv file")
        from clotseg.io.outputs import check_not_an_input

        check_not_an_input(args.csv, "--csv", trees=[args.data])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = discover(args.data, spacing=tuple(args.spacing) if args.spacing else None)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{index.root}: {index.layout} layout, {len(index)} case(s)")
    problems = []
    for p in check_dataset(index, progress=sys.stderr.isatty()):
        print(p.line(), flush=True)
        problems.append(p)
    print(summarize(problems, len(index)))
    if args.csv:
        write_report(Path(args.csv), problems)
    errors = any(p.level == "error" for p in problems)
    return 1 if errors or (args.strict and problems) else 0
