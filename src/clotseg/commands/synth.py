"""`clotseg synth OUT --cases N --seed S`: write a synthetic phantom cohort."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (case-folder layout + truth.csv)")
    parser.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", choices=["small", "medium", "full"], default="small",
                        help="small ≈ 100×80×48, medium ≈ 160×140×80, full ≈ 256×220×130")
    parser.add_argument("--unregistered", action="store_true",
                        help="move the NCCT by a small rigid transform (≤ 2 mm, ≤ 3°) to "
                             "exercise `clotseg preprocess --register`")


def run(args: argparse.Namespace) -> int:
    from clotseg.errors import UsageError

    if args.cases < 1:
        raise UsageError("--cases must be at least 1")
    from clotseg.synth import write_cohort

    truth = write_cohort(args.out, args.cases, args.seed, args.size,
                         registered=not args.unregistered)
    print(f"wrote {args.cases} case(s) to {args.out} (truth: {truth})")
    return 0
