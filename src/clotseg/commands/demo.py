"""`clotseg demo [--out DIR]`: synth → train → predict → evaluate → report on the phantom."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="output folder (default demo_out); a previous demo there is "
                             "replaced")
    parser.add_argument("--quick", action="store_true",
                        help="tiny cohort and one short epoch: checks the pipeline in about "
                             "a minute, no quality target")
    parser.add_argument("--cases", type=int, metavar="N",
                        help="phantom cases to generate (default 60, 6 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the cohort")
    parser.add_argument("--time-budget", type=float, default=9.0, metavar="MINUTES",
                        help="minutes for the whole demo; training gets what synthesis and "
                             "a reserve for predict/evaluate/report leave (default 9)")
    parser.add_argument("--device", help="auto (default), cpu, cuda")


def run(args: argparse.Namespace) -> int:
    from clotseg.demo import main_demo
    from clotseg.errors import UsageError

    if args.cases is not None and args.cases < 3:
        raise UsageError("--cases must be at least 3 (train, validation and test)")
    if args.time_budget <= 0:
        raise UsageError("--time-budget must be positive")
    return main_demo(args.out, args.quick, args.cases, args.seed, args.time_budget, args.device)
