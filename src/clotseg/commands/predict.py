"""`clotseg predict RUN INPUT OUT`: clot masks on the CTA grid + clots.csv."""

from __future__ import annotations

import argparse

from clotseg.commands import spacing_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="trained run folder (from `clotseg train`)")
    parser.add_argument("input", help="a case folder, a dataset in any supported layout, or a "
                                      "folder holding cta/ and ncct/ DICOM series")
    parser.add_argument("out", help="output folder: <case>.nii.gz masks, clots.csv")
    parser.add_argument("--runs", nargs="+", default=[], metavar="RUN",
                        help="more run folders (e.g. other folds): probabilities averaged")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    parser.add_argument("--tta", action="store_true", help="average with flipped inputs")
    parser.add_argument("--save-prob", action="store_true",
                        help="also write <case>_prob.nii.gz (float probability)")
    parser.add_argument("--preview", action="store_true", help="also write <case>.png")
    parser.add_argument("--threshold", type=float, help="probability threshold (run default)")
    parser.add_argument("--min-volume", type=float, metavar="MM3",
                        help="drop predicted components smaller than this (run default)")
    parser.add_argument("--keep-largest", action="store_true", help="keep only the largest clot")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    spacing_arg(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from clotseg.api import segment

    summary = segment([args.run, *args.runs], args.input, args.out, device=args.device,
                      tta=args.tta, save_prob=args.save_prob, preview=args.preview,
                      spacing=tuple(args.spacing) if args.spacing else None,
                      threshold=args.threshold, min_component_mm3=args.min_volume,
                      keep_largest=args.keep_largest, batch_size=args.batch_size)
    n_clots = sum(1 for r in summary.rows if r.get("component"))
    print(f"{len(summary.ok)} case(s) segmented, {n_clots} clot(s) measured -> {args.out}")
    for case_id, reason in summary.failed.items():
        print(f"FAILED {case_id}: {reason}", file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} case(s) failed", file=sys.stderr)
        return 1
    return 0
