"""`clotseg evaluate PRED DATA --out FILE`: per-case metrics CSV, summary JSON, table."""

from __future__ import annotations

import argparse

from clotseg.commands import apply_value_args, spacing_arg, value_args

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", metavar="PRED",
                        help="folder of predicted masks <case>.nii.gz (as written by predict)")
    parser.add_argument("data", metavar="DATA",
                        help="dataset with the reference masks (any supported layout)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="per-case CSV to write; the summary goes next to it as .json")
    parser.add_argument("--split", choices=SPLITS,
                        help="evaluate only this split of RUN/splits.json (needs --run)")
    parser.add_argument("--run", metavar="RUN", help="run folder whose splits.json --split uses")
    spacing_arg(parser)
    value_args(parser)


def run(args: argparse.Namespace) -> int:
    apply_value_args(args)
    from pathlib import Path

    from clotseg.errors import UsageError
    from clotseg.io.outputs import ensure_out_file
    from clotseg.metrics.evaluate import evaluate_dirs, format_table, summary_path

    if Path(args.out).resolve() == summary_path(args.out).resolve():
        raise UsageError(f"--out {args.out}: that is where the summary JSON goes, so the "
                         "per-case table would be overwritten by it; give the table's "
                         f"name, e.g. --out {Path(args.out).with_suffix('.csv')} (the "
                         f"summary is written beside it as {summary_path(args.out).name})")
    ensure_out_file(args.out, "--out file")
    from clotseg.io.outputs import PREDICT_FILES, check_not_an_input
    from clotseg.metrics.evaluate import find_predictions

    pred = Path(args.pred)
    inputs = ([*find_predictions(pred).values(), *(pred / n for n in PREDICT_FILES)]
              if pred.is_dir() else [])
    for out in (args.out, summary_path(args.out)):
        check_not_an_input(out, "--out", trees=[args.data, args.run], files=inputs)
    cases = None
    if args.split or args.run:
        if not (args.split and args.run):
            raise UsageError("--split and --run go together (--split test --run RUN)")
        cases = split_cases(Path(args.run), args.split)
    rows, summary = evaluate_dirs(args.pred, args.data, args.out, cases,
                                  spacing=tuple(args.spacing) if args.spacing else None,
                                  progress=True)
    print(format_table(rows, summary))
    print(f"wrote {args.out} and {summary_path(args.out)}")
    if summary["failed"]:
        import sys

        for case_id, why in summary["failed"].items():
            print(f"FAILED {case_id}: {why}", file=sys.stderr)
        print(f"{len(summary['failed'])} case(s) not scored (also under 'failed' in "
              f"{summary_path(args.out)}); the others were scored", file=sys.stderr)
        return 1
    return 0


def split_cases(run: object, split: str) -> list[str]:
    """Case ids of ``split`` in ``RUN/splits.json``."""
    from clotseg.errors import ClotsegError
    from clotseg.runs import Run

    folder = Run(str(run))
    path = folder.splits_path
    splits = folder.read_splits()
    if splits is None:
        raise ClotsegError(f"{path}: no splits.json in the run folder")
    cases = splits[split]
    if not cases:
        raise ClotsegError(f"{path}: split {split!r} is empty")
    return [str(c) for c in cases]
