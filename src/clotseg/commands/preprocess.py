"""`clotseg preprocess DATA OUT`: register NCCT to CTA, resample, crop an ROI around the
Circle of Willis; writes a case-folder dataset plus what is needed to map results back."""

from __future__ import annotations

import argparse

from clotseg.commands import apply_value_args, positive_mm, value_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder (case folders, nnU-Net raw or original "
                                     ".npy layout; DICOM series folders work) or one case")
    parser.add_argument("out", help="output folder: OUT/<case>/{cta,ncct,clot}.nii.gz, "
                                    "OUT/<case>/preprocess.json, OUT/preprocess.json")
    parser.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                        help="rigidly register the NCCT to the CTA (default: yes); with "
                             "--no-register the NCCT is only resampled onto the CTA grid")
    parser.add_argument("--target-spacing", nargs=3, type=positive_mm, metavar=("X", "Y", "Z"),
                        help="target voxel spacing in mm along the patient's left-right, "
                             "front-back and up-down axes (default: keep the CTA's)")
    # The old name: other commands use --spacing for the .npy spacing, hence the rename.
    parser.add_argument("--spacing", nargs=3, type=positive_mm, dest="old_spacing",
                        help=argparse.SUPPRESS)
    parser.add_argument("--roi", choices=["auto", "mask", "none"], default="auto",
                        help="crop: a box found around the Circle of Willis (auto, default), "
                             "around the clot mask (mask), or no crop (none)")
    parser.add_argument("--roi-size", nargs="+", type=float, default=[120.0], metavar="MM",
                        help="ROI edge in mm: one value (cube) or three (x y z) (default 120)")
    parser.add_argument("--roi-margin", type=float, default=0.0, metavar="MM",
                        help="extra margin in mm on every side of the ROI (default 0)")
    parser.add_argument("--npy-spacing", nargs=3, type=positive_mm, metavar=("X", "Y", "Z"),
                        help="voxel spacing in mm of .npy volumes (the original layout "
                             "stores none; default 1 1 1 with a warning)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    value_args(parser)


def run(args: argparse.Namespace) -> int:
    apply_value_args(args)
    import sys
    import warnings

    from clotseg.errors import UsageError
    from clotseg.preprocess.pipeline import PreprocessSettings, preprocess_dataset

    if args.old_spacing is not None:
        if args.target_spacing is not None:
            raise UsageError("give --target-spacing only (--spacing is its old name)")
        warnings.warn("--spacing is deprecated for preprocess; use --target-spacing",
                      FutureWarning, stacklevel=2)
        args.target_spacing = args.old_spacing
    if len(args.roi_size) not in (1, 3):
        raise UsageError(f"--roi-size takes one or three lengths, got {len(args.roi_size)}")
    if args.npy_spacing is not None and any(s <= 0 for s in args.npy_spacing):
        raise UsageError(f"--npy-spacing needs positive numbers, got {args.npy_spacing}")
    from clotseg.io.outputs import OutLock

    settings = PreprocessSettings(
        register=args.register,
        spacing=tuple(args.target_spacing) if args.target_spacing else None,
        roi=args.roi,
        roi_size_mm=args.roi_size[0] if len(args.roi_size) == 1 else tuple(args.roi_size),
        roi_margin_mm=args.roi_margin)
    with OutLock(args.out, "preprocess"):
        return preprocess_dataset(
            args.data, args.out, settings,
            spacing_npy=tuple(args.npy_spacing) if args.npy_spacing else None,
            progress=not args.no_progress and sys.stderr.isatty())
