"""`clotseg synth` (not implemented yet)."""

from __future__ import annotations

import argparse

from clotseg.commands import not_implemented


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    return not_implemented("synth")
