"""`clotseg synth OUT --cases N --seed S`: write a synthetic phantom cohort."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (case folders + truth.csv)")
    parser.add_argument("--cases", type=int, default=20, metavar="N",
                        help="number of cases (default 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; case k depends only on (seed, k) (default 0)")
    parser.add_argument("--size", choices=["small", "medium", "full"], default="small",
                        help="array size: small ≈ 96×96×48, medium ≈ 160×160×80, "
                             "full ≈ 256×256×128 voxels (default small)")
    parser.add_argument("--unregistered", action="store_true",
                        help="give the NCCT its own grid and move it by a small rigid "
                             "transform (≤ 2 mm, ≤ 3°; saved in motion.json) to exercise "
                             "`clotseg preprocess` registration")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from clotseg.errors import UsageError

    if args.cases < 1:
        raise UsageError(f"--cases must be at least 1 (got {args.cases})")
    from clotseg.io.outputs import ensure_out_dir
    from clotseg.synth import write_cohort

    ensure_out_dir(args.out)

    truth = write_cohort(args.out, args.cases, args.seed, args.size,
                         registered=not args.unregistered, progress=not args.no_progress)
    print(f"wrote {args.cases} case(s) to {args.out}; ground truth in {truth}")
    return 0
