"""One module per subcommand: ``add_arguments(parser)`` (light) and ``run(args) -> int``."""

from __future__ import annotations

import argparse


def spacing_arg(parser: argparse.ArgumentParser) -> None:
    """``--spacing X Y Z`` for the original ``.npy`` layout, which stores no spacing."""
    parser.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                        help="voxel spacing in mm for .npy volumes (original layout stores "
                             "none; default 1 1 1 with a warning)")


def not_implemented(name: str) -> int:
    from clotseg.errors import UsageError

    raise UsageError(f"'{name}' is not implemented yet")
