"""One module per subcommand: ``add_arguments(parser)`` (light) and ``run(args) -> int``."""

from __future__ import annotations

import argparse


def positive_mm(text: str) -> float:
    """argparse type: a finite length in mm greater than zero (else a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"a spacing must be a positive number of mm, "
                                         f"got {text}")
    return value


def spacing_arg(parser: argparse.ArgumentParser) -> None:
    """``--spacing X Y Z`` for the original ``.npy`` layout, which stores no spacing."""
    parser.add_argument("--spacing", nargs=3, type=positive_mm, metavar=("X", "Y", "Z"),
                        help="voxel spacing in mm for .npy volumes (original layout stores "
                             "none; default 1 1 1 with a warning)")


def value_args(parser: argparse.ArgumentParser, *, masks: bool = True) -> None:
    """The explicit ways out of the voxel value checks (see :mod:`clotseg.io.values`)."""
    if masks:
        parser.add_argument("--mask-255", action="store_true",
                            help="read reference masks stored as 0/255 as 0/1 (otherwise "
                                 "any mask value other than 0/1 is an error)")
    parser.add_argument("--replace-nonfinite", type=float, metavar="HU",
                        help="replace NaN/inf CTA and NCCT voxels by HU, with a warning "
                             "(otherwise they are an error)")


def apply_value_args(args: argparse.Namespace) -> None:
    """Pass :func:`value_args` on through the environment (so that torchrun's other
    processes and data-loading workers see them too)."""
    import math
    import os

    from clotseg.errors import UsageError
    from clotseg.io.values import MASK_255_ENV, NONFINITE_ENV

    if getattr(args, "mask_255", False):
        os.environ[MASK_255_ENV] = "1"
    value = getattr(args, "replace_nonfinite", None)
    if value is not None:
        if not math.isfinite(value):
            raise UsageError(f"--replace-nonfinite needs a finite number, got {value}")
        os.environ[NONFINITE_ENV] = repr(value)

