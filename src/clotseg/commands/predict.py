"""`clotseg predict RUN INPUT OUT`: clot masks on the CTA grid, clots.csv, predict.json."""

from __future__ import annotations

import argparse

from clotseg.commands import apply_value_args, spacing_arg, value_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="trained run folder (from `clotseg train`), or a model "
                                    "exported by `clotseg export` (model.zip, model.onnx)")
    parser.add_argument("input", help="a case folder (cta/ncct files or cta/ and ncct/ DICOM "
                                      "folders; one of the two is enough, with a warning), "
                                      "or a dataset in any supported layout")
    parser.add_argument("out", help="output folder: <case>.nii.gz masks on the CTA grid (the "
                                    "NCCT's for an NCCT-only case), clots.csv, cases.csv, "
                                    "predict.json")
    parser.add_argument("--runs", nargs="+", default=[], metavar="RUN",
                        help="more run folders (e.g. the other folds): the probabilities of "
                             "all runs are averaged")
    parser.add_argument("--confirm-with", nargs="+", default=[], metavar="RUN",
                        dest="confirm",
                        help="keep a predicted clot only where this other run (several: "
                             "their mean) also reaches --confirm-threshold in one of its "
                             "voxels, e.g. a 3D run confirmed by a 2.5D one; what is "
                             "dropped is listed in predict.json")
    parser.add_argument("--confirm-threshold", type=float, metavar="T",
                        help="probability the confirming run must reach (default: its own "
                             "threshold)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available, default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                        help="torch (default) or onnx: onnxruntime on the CPU (needs "
                             "clotseg[onnx]; implied by a .onnx model)")
    parser.add_argument("--format", nargs="+", dest="formats", metavar="FMT",
                        choices=("nii.gz", "seg.nrrd", "dicom-seg"),
                        help="mask file format(s): nii.gz (default), seg.nrrd (3D Slicer "
                             "segmentation), dicom-seg (DICOM Segmentation of a DICOM CTA; "
                             "written by default too when the CTA is DICOM and highdicom "
                             "is installed)")
    parser.add_argument("--labels", action="store_true",
                        help="number the clots in the .nii.gz mask: component k has value "
                             "k, the `component` of its clots.csv row")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="skip cases whose outputs are all in OUT already (their "
                             "clots.csv rows are kept)")
    parser.add_argument("--num-parts", type=int, default=1, metavar="K",
                        help="split the cases into K parts (for job arrays; default 1)")
    parser.add_argument("--part-id", type=int, default=0, metavar="I",
                        help="predict part I (0..K-1) only; its tables are "
                             "clots.partIofK.csv / predict.partIofK.json")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto: bf16 on CUDA, fp32 on CPU (bf16 on CPU helps only on "
                             "CPUs with bf16 matrix units)")
    parser.add_argument("--tta", action="store_true",
                        help="average with left-right and front-back flipped inputs")
    parser.add_argument("--save-prob", action="store_true",
                        help="also write <case>_prob.nii.gz (float32 probability)")
    parser.add_argument("--preview", action="store_true",
                        help="also write <case>.png (slices through the predicted clot)")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="probability threshold (default: the run's)")
    parser.add_argument("--min-volume", type=float, metavar="MM3",
                        help="drop predicted clots smaller than this many mm^3 "
                             "(default: the run's)")
    parser.add_argument("--keep-largest", action="store_true",
                        help="keep only the largest predicted clot")
    parser.add_argument("--all-components", action="store_true",
                        help="keep every predicted component; by default only the primary "
                             "clot (the component holding the most probability) and its "
                             "fragments within 10 mm are kept, and the others are listed "
                             "in predict.json")
    parser.add_argument("--no-fp-filter", action="store_true",
                        help="skip the run's learned false-positive component filter")
    parser.add_argument("--scan-support", action="store_true",
                        help="also ask the network whether each scan alone shows what it "
                             "found (two more passes over those slices) and add that to the "
                             "review score")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B",
                        help="slices per forward pass (default 16)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads (default: all cores available to the process)")
    parser.add_argument("--cta-series", metavar="UID",
                        help="DICOM SeriesInstanceUID of the CTA when a folder holds several")
    parser.add_argument("--ncct-series", metavar="UID",
                        help="DICOM SeriesInstanceUID of the NCCT when a folder holds several")
    spacing_arg(parser)
    value_args(parser, masks=False)


def run(args: argparse.Namespace) -> int:
    apply_value_args(args)
    import sys

    from clotseg.api import segment
    from clotseg.errors import UsageError
    from clotseg.inference.predictor import available_cpus

    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.min_volume is not None and args.min_volume < 0:
        raise UsageError(f"--min-volume must be >= 0, got {args.min_volume}")
    if args.confirm_threshold is not None and not 0.0 < args.confirm_threshold <= 1.0:
        raise UsageError(f"--confirm-threshold must be in (0, 1], got {args.confirm_threshold}")
    if args.confirm_threshold is not None and not args.confirm:
        raise UsageError("--confirm-threshold needs --confirm-with RUN")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 0:
        raise UsageError(f"--threads must be >= 0 (0: all cores available), got "
                         f"{args.threads}")
    if args.num_parts < 1:
        raise UsageError(f"--num-parts must be >= 1, got {args.num_parts}")
    if not 0 <= args.part_id < args.num_parts:
        raise UsageError(f"--part-id must be in 0..{args.num_parts - 1} with --num-parts "
                         f"{args.num_parts}, got {args.part_id}")
    results = segment(
        [args.run, *args.runs], args.input, args.out, device=args.device, tta=args.tta,
        precision=args.precision, save_prob=args.save_prob, preview=args.preview,
        threshold=args.threshold, min_component_mm3=args.min_volume,
        keep_largest=args.keep_largest, batch_size=args.batch_size,
        spacing=tuple(args.spacing) if args.spacing else None,
        cta_series=args.cta_series, ncct_series=args.ncct_series,
        num_threads=args.threads or available_cpus(), progress=args.progress,
        formats=args.formats, labels=args.labels, resume=args.resume,
        num_parts=args.num_parts, part_id=args.part_id, engine=args.engine,
        fp_filter=not args.no_fp_filter, primary_only=not args.all_components,
        scan_support=args.scan_support, confirm=args.confirm,
        confirm_threshold=args.confirm_threshold)
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    n_clots = sum(1 for r in ok for row in r.rows if str(row.get("component")) not in ("0", ""))
    skipped = sum(r.skipped for r in ok)
    done = f" ({skipped} already done)" if skipped else ""
    print(f"{len(ok)} of {len(results)} case(s) segmented{done}, {n_clots} clot(s) measured "
          f"-> {args.out}")
    one = sorted(r.case_id for r in ok if r.inputs and len(r.inputs) == 1)
    if one:  # stated, never silent: these masks come from one scan
        print(f"{len(one)} case(s) from one scan only (see the inputs column): "
              f"{', '.join(one[:5])}{' ...' if len(one) > 5 else ''}")
    for r in failed:
        where = f" [{r.file}]" if r.file and r.file not in (r.error or "") else ""
        print(f"FAILED {r.case_id}{where}: {r.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} case(s) failed; see {args.out}/predict.json", file=sys.stderr)
        return 1
    return 0
