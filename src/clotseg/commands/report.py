"""`clotseg report RUN [--pred PRED --data DATA] [--eval FILE.csv]`: self-contained HTML."""

from __future__ import annotations

import argparse

from clotseg.commands import spacing_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (from `clotseg train`)")
    parser.add_argument("--pred", metavar="PRED",
                        help="prediction folder (from `clotseg predict`): one card per case")
    parser.add_argument("--data", metavar="DATA",
                        help="dataset with the images and reference masks of the predicted "
                             "cases (figures; evaluation when --eval is not given)")
    parser.add_argument("--eval", dest="eval_csv", metavar="FILE.csv",
                        help="per-case CSV from `clotseg evaluate` (its FILE.json summary is "
                             "read too)")
    parser.add_argument("--out", metavar="FILE", help="report file (default RUN/report.html)")
    parser.add_argument("--max-cases", type=int, metavar="N",
                        help="show only the N worst cases (default: all)")
    spacing_arg(parser)


def run(args: argparse.Namespace) -> int:
    from clotseg.errors import UsageError
    from clotseg.report.html import build_report

    if args.max_cases is not None and args.max_cases < 0:
        raise UsageError("--max-cases must be 0 or more")
    if args.data and not args.pred and not args.eval_csv:
        raise UsageError("--data needs --pred PRED (the predictions to show)")
    if args.out:
        from clotseg.io.outputs import ensure_out_file

        ensure_out_file(args.out, "--out file")
        from clotseg.io.outputs import check_not_an_input
        from clotseg.metrics.evaluate import summary_path

        given = [args.eval_csv, summary_path(args.eval_csv)] if args.eval_csv else []
        check_not_an_input(args.out, "--out", trees=[args.run, args.data, args.pred],
                           keep=("report.html",), files=given)
    out = build_report(args.run, args.out, pred=args.pred, data=args.data,
                       eval_csv=args.eval_csv, max_cases=args.max_cases,
                       spacing=tuple(args.spacing) if args.spacing else None)
    print(f"wrote {out}")
    return 0
