"""`clotseg synth OUT --cases N --seed S`: write a synthetic phantom cohort."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (case folders + truth.csv)")
    parser.add_argument("--cases", type=int, default=20, metavar="N",
                        help="number of cases (default 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; case k depends only on (seed, k) (default 0)")
    parser.add_argument("--size", choices=["small", "medium", "full", "clinical"],
                        default="small",
                        help="array size: small ≈ 96×96×48, medium ≈ 160×160×80, "
                             "full ≈ 256×256×128 voxels, clinical: a whole head at "
                             "512×512×280-400 with a 2.5-5 mm NCCT (default small)")
    parser.add_argument("--unregistered", action="store_true",
                        help="give the NCCT its own grid and move it by a small rigid "
                             "transform (≤ 2 mm, ≤ 3°; saved in motion.json) to exercise "
                             "`clotseg preprocess` registration (always so for "
                             "--size clinical)")
    parser.add_argument("--shift", choices=["standard", "shifted"], default="standard",
                        help="imaging settings: 'shifted' images the same patients as another "
                             "scanner and protocol would (noise, blur, contrast timing, HU "
                             "offsets, spacing 0.4–1.0 × 0.5–2.5 mm, vessel radii ±20 %%, "
                             "rotations), for testing generalisation (default standard)")
    parser.add_argument("--thick-ncct", type=float, default=None, metavar="SHARE",
                        help="share of cases (0..1) whose NCCT is reconstructed at 2.5 or "
                             "5 mm slices (slab-averaged, on its own grid), as clinical "
                             "NCCTs often are (default 0 for --shift standard, 0.3 for "
                             "shifted; --size clinical always has a 2.5-5 mm NCCT)")
    parser.add_argument("--format", choices=["nii.gz", "nrrd", "mha"], default="nii.gz",
                        help="file format of the written volumes (default nii.gz)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clotseg.errors import UsageError

    if args.cases < 1:
        raise UsageError(f"--cases must be at least 1 (got {args.cases})")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {args.seed})")
    if args.shift != "standard" and args.unregistered:
        raise UsageError("--shift shifted writes registered pairs; drop --unregistered")
    if args.shift != "standard" and args.size == "clinical":
        raise UsageError("--shift shifted is for the ROI sizes (small, medium, full), not "
                         "--size clinical")
    from clotseg.io.outputs import ensure_out_dir
    from clotseg.synth import write_cohort
    from clotseg.synth.cohort import check_thick_ncct

    try:
        check_thick_ncct(args.thick_ncct, args.size)
    except ValueError as exc:
        raise UsageError(f"--thick-ncct: {exc}") from None

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out}: folder is not empty; synth writes a whole cohort (case "
                         "folders and truth.csv) and would mix it with what is there or "
                         "replace its truth.csv. Give a new or empty folder")
    ensure_out_dir(out)

    # A clinical pair is two acquisitions: the NCCT has its own (thick-slice) grid and
    # the patient moved a little between them.
    registered = not args.unregistered and args.size != "clinical"
    truth = write_cohort(args.out, args.cases, args.seed, args.size,
                         registered=registered, progress=not args.no_progress,
                         shift=args.shift, suffix=f".{args.format}",
                         thick_ncct=args.thick_ncct)
    print(f"wrote {args.cases} case(s) to {args.out}; ground truth in {truth}")
    return 0
