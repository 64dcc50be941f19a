"""`clotseg measure MASKS DATA --out clots.csv`: predict's clot measurements for any masks."""

from __future__ import annotations

import argparse

from clotseg.commands import spacing_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("masks", metavar="MASKS",
                        help="folder of masks named <case>.nii.gz (any volume format) or "
                             "<case>.seg.nrrd: manual, nnU-Net or clotseg; non-zero = clot")
    parser.add_argument("data", metavar="DATA",
                        help="the dataset with the CTA and NCCT of those cases (any layout)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="clots.csv to write (the columns of predict's clots.csv)")
    spacing_arg(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from clotseg.io.outputs import check_not_an_input
    from clotseg.measure.clots import write_clots_csv
    from clotseg.measure.masks import find_masks, measure_masks

    check_not_an_input(args.out, "--out", trees=[args.data],
                       files=find_masks(args.masks).values())
    res = measure_masks(args.masks, args.data,
                        spacing=tuple(args.spacing) if args.spacing else None,
                        progress=args.progress)
    for case_id in res.unknown:
        warnings.warn(f"{args.masks}: mask for {case_id!r}, which is not a case of "
                      f"{args.data}; ignored", UserWarning, stacklevel=2)
    if res.without_mask:
        warnings.warn(f"{len(res.without_mask)} case(s) of {args.data} have no mask in "
                      f"{args.masks}: {', '.join(res.without_mask[:10])}"
                      + (" ..." if len(res.without_mask) > 10 else ""), UserWarning,
                      stacklevel=2)
    write_clots_csv(args.out, res.rows)
    cases = {r["case_id"] for r in res.rows}
    n_clots = sum(1 for r in res.rows if r["component"])
    print(f"{len(cases)} case(s) measured, {n_clots} clot(s) -> {args.out}")
    for case_id, reason in res.failed.items():
        print(f"FAILED {case_id}: {reason}", file=sys.stderr)
    return 1 if res.failed else 0
