"""`clotseg export RUN [model.zip] [--onnx model.onnx]`: a trained run as a shareable model."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN",
                        help="trained run folder (from `clotseg train`) or a model.zip")
    parser.add_argument("zip", metavar="ZIP", nargs="?",
                        help="model.zip to write: model.json, best weights, resolved "
                             "config, checksums (no cache, no case ids or splits)")
    parser.add_argument("--onnx", metavar="FILE",
                        help="also (or only) write the network as ONNX, settings in its "
                             "metadata (needs clotseg[onnx])")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clotseg.errors import UsageError
    from clotseg.model_export import export_onnx, export_zip, is_model_zip

    if not args.zip and not args.onnx:
        raise UsageError("give a ZIP to write, --onnx FILE, or both")
    if args.zip and not args.zip.lower().endswith(".zip"):
        raise UsageError(f"{args.zip}: the model file must end in .zip")
    if args.onnx and not args.onnx.lower().endswith(".onnx"):
        raise UsageError(f"{args.onnx}: the ONNX file must end in .onnx")
    if args.zip:
        if is_model_zip(args.run):
            raise UsageError(f"{args.run} is already a model zip")
        path = export_zip(args.run, args.zip)
        print(f"model -> {path} ({Path(path).stat().st_size / 1e6:.1f} MB)")
    if args.onnx:
        path = export_onnx(args.run, args.onnx)
        print(f"ONNX model -> {path} ({Path(path).stat().st_size / 1e6:.1f} MB)")
    return 0
