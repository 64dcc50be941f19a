"""Segmentation quality on patients the model never saw, on two test cohorts.

Trains clotseg with default settings under a fixed budget on a standard phantom cohort,
then predicts and scores two held-out cohorts:

* ``same``: new patients from the training settings (another seed);
* ``shifted``: new patients imaged as another scanner and protocol would
  (:data:`clotseg.synth.shift.SHIFTED`: noise, blur, contrast timing from early arterial to
  late venous, HU offsets, in-plane 0.4–1.0 mm, slices 0.5–2.5 mm, vessel radii ±20 %,
  rotations), written as NRRD. Training never sees these settings; this is the number
  that matters, since real scanners differ.

Per cohort it reports median Dice, missed clots, clot-free patients given a false
positive, median HD95, per-patient clot volume and length against the truth (Pearson r),
perviousness error, false-positive components per patient, and Dice / sensitivity by clot
location and by clot length, and detection sensitivity (clots found) and specificity
(clot-free patients without a false positive). Per-patient volume, length and
perviousness come from ``cases.csv`` (the primary clot), as a user would read them.

Missing scans (``--inputs``, default ``both,cta,ncct``): each test cohort is predicted
with both scans, then with the NCCT removed (``cta``: CTA only) and with the CTA removed
(``ncct``: NCCT only). A one-modality cohort is a real copy of the cohort without that
file, as a user would have it. Without the CTA the masks lie on the NCCT grid, so that
copy's reference mask is the truth put onto the NCCT grid (nearest-label resampling in
patient space; the phantom's scans are co-registered). ``cohorts.<name>`` stays the
result with both scans; ``cohorts.<name>_cta_only`` and ``cohorts.<name>_ncct_only`` are
the others, with the same metrics (perviousness needs both, so it is empty there).

    python benchmarks/quality.py --time-limit 30                     # the full benchmark
    python benchmarks/quality.py --time-limit 8 --label no-fp-filter --set train.fp_filter=false
    python benchmarks/quality.py --run RUN                            # score an existing run
    python benchmarks/quality.py --quick                              # a few minutes, smoke
    python benchmarks/quality.py --run RUN --inputs ncct              # NCCT-only cohorts
    python benchmarks/quality.py --run RUN --tta --ensemble RUN2      # flip TTA, 2-run mean
    python benchmarks/quality.py --run RUN --test-cases 90 --cohorts shifted  # 90 patients
    python benchmarks/quality.py --train-shift shifted --label ceiling  # trained on the test site

``--train-shift shifted`` draws the training cohort with the shifted site's settings (other
patients): what the same budget reaches when nothing is shifted, a ceiling to read the
other arms against, never a method (a user cannot train on a site they have not seen).

Wall-clock budgets depend on the machine and its load; the JSON records both.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)

COHORTS = {  # name: (seed, shift, format)
    "train": (0, "standard", "nii.gz"),
    "same": (101, "standard", "nii.gz"),
    "shifted": (202, "shifted", "nrrd"),
}
LENGTH_BINS = [("<10mm", 0.0, 10.0), ("10-25mm", 10.0, 25.0), (">25mm", 25.0, math.inf)]
#: ``--inputs`` value -> (scan removed from the cohort copy, suffix of its cohorts key).
INPUTS = {"both": (None, ""), "cta": ("ncct", "_cta_only"), "ncct": ("cta", "_ncct_only")}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="quality_work", help="working folder (data, runs, preds)")
    p.add_argument("--label", default="default", help="name of this configuration")
    p.add_argument("--train-cases", type=int, default=60)
    p.add_argument("--train-thick-ncct", type=float, default=0.0, metavar="SHARE",
                   help="share of training cases whose NCCT is a 2.5/5 mm reconstruction "
                        "(synth --thick-ncct; the test cohorts are unchanged)")
    p.add_argument("--train-shift", default="standard", choices=("standard", "shifted"),
                   help="phantom settings of the training cohort; 'shifted' trains on the "
                        "held-out site's settings (other patients): the ceiling the budget "
                        "reaches when nothing is shifted, not an arm to compare as a method")
    p.add_argument("--test-cases", type=int, default=30)
    p.add_argument("--time-limit", type=float, default=30.0, help="training budget, minutes")
    p.add_argument("--epochs", type=int, default=None, help="fixed epochs instead of a budget")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override (repeatable)")
    p.add_argument("--run", default=None, help="score this trained run instead of training")
    p.add_argument("--retune", action="append", default=None, metavar="KEY=VALUE",
                   help="with --run: score a copy of RUN (in WORK/runs/LABEL) whose "
                        "post-processing is chosen again on its validation cases with these "
                        "settings, e.g. train.fp_filter=true (repeatable; 'none' for none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true",
                   help="predict with flip test-time augmentation (predict --tta)")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="RUN",
                   help="more trained runs whose probabilities predict averages with the "
                        "scored run's (predict --runs)")
    p.add_argument("--confirm", nargs="+", default=[], metavar="RUN",
                   help="predict with `--confirm-with RUN`: keep only the components these "
                        "runs also mark (e.g. a 3D --run confirmed by a 2.5D run)")
    p.add_argument("--no-fp-filter", action="store_true",
                   help="predict without the run's learned false-positive filter")
    p.add_argument("--scan-support", action="store_true",
                   help="predict with each scan asked alone (predict --scan-support)")
    p.add_argument("--refit-qc", action="store_true",
                   help="choose the review threshold again on the run's validation cases, "
                        "predicted now as training does, and flag with it (for a run "
                        "trained before the review score changed)")
    p.add_argument("--inputs", default="both,cta,ncct", type=_inputs_arg,
                   help="scans to predict each test cohort with, comma-separated: both, cta "
                        "(NCCT removed), ncct (CTA removed); default all three")
    p.add_argument("--cohorts", default="same,shifted", type=_cohorts_arg,
                   help="test cohorts to score, comma-separated (default same,shifted)")
    p.add_argument("--quick", action="store_true", help="tiny cohorts and budget (smoke test)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p.parse_args(argv)


def _subset(flag: str, allowed) -> Callable[[str], list[str]]:
    """An argparse type for ``flag``: a comma-separated subset of ``allowed``, in the order
    given, each item once."""
    def parse_subset(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items or any(t not in allowed for t in items):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: choose from "
                                             f"{', '.join(allowed)} (comma-separated)")
        return list(dict.fromkeys(items))
    return parse_subset


_inputs_arg = _subset("--inputs", tuple(INPUTS))
_cohorts_arg = _subset("--cohorts", tuple(c for c in COHORTS if c != "train"))


def cohort_without(data: Path, drop: str, dest: Path) -> Path:
    """A copy of cohort ``data`` in ``dest`` without the ``drop`` scan (``cta``/``ncct``)
    of each case: real files, as a user with one scan has them. Without the CTA the
    reference mask is put onto the NCCT grid (module docstring). Made once; a copy from
    an earlier call is reused when its truth.csv equals the cohort's."""
    if (dest / "truth.csv").is_file() and (
            (dest / "truth.csv").read_bytes() == (data / "truth.csv").read_bytes()):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for case in sorted(p for p in data.iterdir() if p.is_dir()):
        _copy_case_without(case, drop, tmp / case.name)
    shutil.copy2(data / "truth.csv", tmp / "truth.csv")
    tmp.rename(dest)
    return dest


def _copy_case_without(case: Path, drop: str, dest: Path) -> None:
    """One case folder without its ``drop`` scan (see :func:`cohort_without`)."""
    from clotseg.io.readers import read_volume, write_volume
    from clotseg.preprocess.resample import resample_to_grid

    dest.mkdir(parents=True)
    files = {f.name.split(".")[0]: f for f in case.iterdir() if f.is_file()}
    if "motion" in files and drop == "cta":
        raise SystemExit(f"{case}: unregistered NCCT (motion.json); the truth cannot be put "
                         "on the NCCT grid without the motion")
    for stem, f in files.items():
        if stem == drop:
            continue
        if stem == "clot" and drop == "cta":  # masks of NCCT-only cases lie on its grid
            on_ncct = resample_to_grid(read_volume(f), read_volume(files["ncct"]).grid,
                                       interpolation="label")
            write_volume(on_ncct, dest / f.name, mask=True)
        else:
            shutil.copy2(f, dest / f.name)


def clotseg(*argv: str) -> None:
    """Run a clotseg command as a user would; stop on failure."""
    cmd = [sys.executable, "-m", "clotseg.cli", *argv]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:])
        raise SystemExit(f"failed ({done.returncode}): clotseg {' '.join(argv)}")


def make_cohorts(work: Path, n_train: int, n_test: int, train_thick: float = 0.0,
                 train_shift: str = "standard", names=tuple(COHORTS)) -> dict[str, Path]:
    """The benchmark's cohorts ``names`` under ``work/data``, made where missing."""
    dirs = {}
    for name, (seed, shift, fmt) in COHORTS.items():
        if name not in names:
            continue
        n = n_train if name == "train" else n_test
        thick = train_thick if name == "train" else 0.0
        tag = f"_thick{thick:g}" if thick else ""
        if name == "train" and train_shift != shift:
            shift, tag = train_shift, f"{tag}_{train_shift}"
        d = work / "data" / f"{name}_{n}{tag}"
        if (d / "truth.csv").is_file():
            _check_cohort_version(d)
        else:
            extra = ["--thick-ncct", f"{thick:g}"] if thick else []
            clotseg("synth", str(d), "--cases", str(n), "--seed", str(seed), "--shift", shift,
                    "--format", fmt, "--no-progress", *extra)
        dirs[name] = d
    return dirs


def _check_cohort_version(folder: Path) -> None:
    """A cohort written by another version of the phantom is not the benchmark's cohort:
    its scores would be compared with others' as if it were."""
    from clotseg.synth.cohort import TRUTH_COLUMNS

    with open(folder / "truth.csv", newline="") as fh:
        header = next(csv.reader(fh), [])
    if header != TRUTH_COLUMNS:
        raise SystemExit(f"{folder} was made by another version of the phantom "
                         f"(truth.csv columns differ); remove it or choose another --work")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def pearson(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def median(values) -> float | None:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    return float(np.median(v)) if v.size else None


def qc_agreement(cases: dict[str, dict], dice: dict[str, float],
                 threshold: float | None = None) -> dict:
    """How well predict's QC score (cases.csv ``qc_score``) tells bad masks: Spearman rho
    with Dice over all patients, clot-free ones too (negative is good), the same over the
    patients given a mask (where the score judges a mask, not an empty result), and the
    share of the patients with Dice < 0.5 and with Dice >= 0.8 that predict flagged
    (``review``), or that ``threshold`` flags when given (``--refit-qc``)."""
    from scipy.stats import spearmanr

    qc = {c: num(cases.get(c, {}).get("qc_score")) for c in dice}
    ids = [c for c in dice if math.isfinite(qc[c]) and math.isfinite(dice[c])]
    flag = {c: (cases[c].get("review") == "True" if threshold is None
                else qc[c] >= threshold) for c in ids}
    masked = [c for c in ids if num(cases[c].get("volume_mm3")) > 0]
    rho_masked = (spearmanr([qc[c] for c in masked], [dice[c] for c in masked])[0]
                  if len(masked) > 2 else None)

    def share(sel: list[str]) -> dict:
        n = len(sel)
        return {"fraction": sum(flag[c] for c in sel) / n if n else None,
                "flagged": sum(flag[c] for c in sel), "of": n}

    rho = spearmanr([qc[c] for c in ids], [dice[c] for c in ids])[0] if len(ids) > 2 else None
    return {"qc_spearman_rho": None if rho is None or not math.isfinite(rho) else float(rho),
            "qc_spearman_rho_masks": (None if rho_masked is None or not math.isfinite(rho_masked)
                                      else float(rho_masked)),
            "qc_masks": len(masked),
            "flagged_of_dice_below_0_5": share([c for c in ids if dice[c] < 0.5]),
            "flagged_of_dice_at_least_0_8": share([c for c in ids if dice[c] >= 0.8])}


def score(pred: Path, data: Path, qc_threshold: float | None = None) -> dict:
    """Every number of the quality table for one predicted cohort (``qc_threshold``: flag
    with this review threshold instead of predict's)."""
    clotseg("evaluate", str(pred), str(data), "--out", str(pred / "evaluation.csv"))
    ev = {r["case_id"]: r for r in read_csv(pred / "evaluation.csv")}
    truth = {r["case_id"]: r for r in read_csv(data / "truth.csv")}
    cases = {r["case_id"]: r for r in read_csv(pred / "cases.csv")}
    clot_ids = [c for c in truth if truth[c]["has_clot"] == "True"]
    free_ids = [c for c in truth if truth[c]["has_clot"] != "True"]
    dice = {c: num(ev[c]["dice"]) for c in truth}
    detected = {c: ev[c]["detection"] == "TP" for c in clot_ids}
    vol_t = [num(truth[c]["volume_mm3"]) for c in clot_ids]
    vol_p = [num(cases[c]["volume_mm3"]) if c in cases else 0.0 for c in clot_ids]
    len_t = [num(truth[c]["length_mm"]) for c in clot_ids]
    len_p = [num(cases[c]["length_mm"]) if c in cases else 0.0 for c in clot_ids]
    perv = [abs(num(cases[c]["perviousness_hu"]) - num(truth[c]["perviousness_hu"]))
            for c in clot_ids if detected[c] and c in cases]

    def group(ids):
        return {"n": len(ids), "median_dice": median(dice[c] for c in ids),
                "sensitivity": (sum(detected[c] for c in ids) / len(ids)) if ids else None}

    by_loc: dict[str, list[str]] = {}
    for c in clot_ids:
        by_loc.setdefault(truth[c]["location"], []).append(c)
    by_len = {name: [c for c in clot_ids if lo <= num(truth[c]["length_mm"]) < hi]
              for name, lo, hi in LENGTH_BINS}
    by_ncct: dict[str, list[str]] = {}  # thin vs thick-slice NCCT (truth.csv, when recorded)
    for c in clot_ids:
        mm = num(truth[c].get("ncct_thickness_mm"))
        if math.isfinite(mm):
            by_ncct.setdefault("thick (>= 2.5 mm)" if mm >= 2.5 else "thin", []).append(c)
    fp_free = [c for c in free_ids if ev[c]["detection"] == "FP"]
    return {
        "n_patients": len(truth), "n_clot": len(clot_ids), "n_clot_free": len(free_ids),
        "median_dice": median(dice.values()),
        "mean_dice": float(np.nanmean(list(dice.values()))),
        "median_dice_clot_patients": median(dice[c] for c in clot_ids),
        "detection_sensitivity": (sum(detected.values()) / len(clot_ids)
                                  if clot_ids else None),
        "detection_specificity": (1 - len(fp_free) / len(free_ids) if free_ids else None),
        "clots_missed": sum(not d for d in detected.values()),
        "missed_fraction": (sum(not d for d in detected.values()) / len(clot_ids)
                            if clot_ids else None),
        "clot_free_with_fp": len(fp_free),
        "fp_patient_fraction": len(fp_free) / len(free_ids) if free_ids else None,
        "median_hd95_mm": median(num(ev[c]["hd95_mm"]) for c in clot_ids if detected[c]),
        "volume_pearson_r": pearson(vol_t, vol_p),
        "length_pearson_r": pearson(len_t, len_p),
        "perviousness_median_abs_error_hu": median(perv),
        "fp_components_per_patient": float(np.mean([num(ev[c]["fp_components"])
                                                    for c in truth])),
        "by_location": {k: group(v) for k, v in sorted(by_loc.items())},
        "by_length": {k: group(v) for k, v in by_len.items()},
        "by_ncct_thickness": {k: group(v) for k, v in sorted(by_ncct.items())},
        **qc_agreement(cases, dice, qc_threshold),
        "per_patient": [{"case_id": c, "dice": round(dice[c], 4),
                         "detection": ev[c]["detection"], "location": truth[c]["location"],
                         "true_length_mm": num(truth[c]["length_mm"]),
                         "pred_length_mm": num(cases.get(c, {}).get("length_mm")),
                         "true_volume_mm3": num(truth[c]["volume_mm3"]),
                         "pred_volume_mm3": num(cases.get(c, {}).get("volume_mm3")),
                         "fp_components": int(num(ev[c]["fp_components"])),
                         "qc_score": num(cases.get(c, {}).get("qc_score"))}
                        for c in truth],
    }


def predict_options(args: argparse.Namespace) -> list[str]:
    """The ``clotseg predict`` flags this configuration adds."""
    opts = ["--no-fp-filter"] if args.no_fp_filter else []
    opts += ["--scan-support"] if args.scan_support else []
    opts += ["--tta"] if args.tta else []
    opts += ["--confirm-with", *args.confirm] if args.confirm else []
    return opts + (["--runs", *args.ensemble] if args.ensemble else [])


def refit_qc(run: Path, args: argparse.Namespace) -> float:
    """The review threshold chosen on ``run``'s validation cases (``splits.json``, data
    from ``train.json``), predicted now with this configuration's predict options, by the
    rule training uses (:func:`clotseg.inference.qc.choose_threshold`)."""
    from clotseg.inference.qc import choose_threshold
    from clotseg.io.layouts import discover
    from clotseg.training.trainer import predicted_qc

    info = json.loads((run / "train.json").read_text())
    val = json.loads((run / "splits.json").read_text())["val"]
    cases = discover(info["data"]).subset(val).cases
    scored = predicted_qc(run, cases, device=args.device,
                          scan_support=args.scan_support)
    if scored is None:
        raise SystemExit(f"{run}: a validation mask is not on its CTA's grid; cannot refit")
    scores = scored.support_scores if args.scan_support else scored.scores
    if scores is None:
        raise SystemExit(f"{run}: no scan-support scores (trained without modality dropout)")
    return choose_threshold(scores, scored.dice).threshold


def retuned_copy(run: Path, dest: Path, args: argparse.Namespace) -> Path:
    """A copy of ``run`` at ``dest`` (its cache left out) with post-processing, filter and
    review threshold chosen again (:func:`clotseg.training.trainer.retune`)."""
    from clotseg.training.trainer import retune

    if not args.run:
        raise SystemExit("--retune needs --run (the trained run to tune again)")
    if dest.resolve() == run.resolve() or dest.exists():
        raise SystemExit(f"{dest} exists; remove it or choose another --label")
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("cache"))
    settings = [kv for kv in args.retune if kv != "none"]
    retune(dest, settings=settings, device=args.device)
    return dest


def main(argv=None) -> None:
    args = parse(argv)
    if args.quick:
        args.train_cases, args.test_cases = 8, 4
        args.time_limit = min(args.time_limit, 1.5)
    work = Path(args.work)
    t0 = time.perf_counter()
    data = make_cohorts(work, args.train_cases, args.test_cases, args.train_thick_ncct,
                        args.train_shift, ([] if args.run else ["train"]) + args.cohorts)
    t_synth = time.perf_counter() - t0
    run = Path(args.run) if args.run else work / "runs" / args.label
    if args.retune is not None:
        run = retuned_copy(run, work / "runs" / args.label, args)
    t_train = 0.0
    if not args.run:
        if (run / "checkpoints" / "best.pt").is_file():
            raise SystemExit(f"{run} exists; remove it or choose another --label")
        argv = ["train", str(data["train"]), "--out", str(run),
                "--set", "data.test_fraction=0", "--device", args.device]
        argv += ["--epochs", str(args.epochs)] if args.epochs else [
            "--time-limit", str(args.time_limit), "--epochs", "1000"]
        for kv in args.set:
            argv += ["--set", kv]
        t = time.perf_counter()
        clotseg(*argv)
        t_train = time.perf_counter() - t
    result = {"benchmark": "quality", "label": args.label, "overrides": args.set,
              "train_thick_ncct": args.train_thick_ncct, "train_shift": args.train_shift,
              "fp_filter": not args.no_fp_filter, "tta": args.tta,
              "retune": args.retune,
              "ensemble": [str(r) for r in args.ensemble],
              "confirm": [str(r) for r in args.confirm],
              "time_limit_min": None if args.epochs else args.time_limit,
              "epochs": args.epochs, "train_cases": args.train_cases,
              "test_cases": args.test_cases, "run": str(run),
              "train_seconds": round(t_train, 1), "synth_seconds": round(t_synth, 1),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average": os.getloadavg()}}
    train_json = run / "train.json"
    if train_json.is_file():
        info = json.loads(train_json.read_text())
        result["training"] = {k: info.get(k) for k in ("best_val_dice", "best_epoch",
                                                       "epochs_done", "stopped", "seconds")}
    model_json = run / "model.json"
    if model_json.is_file():  # the post-processing predict uses (chosen on validation)
        spec = json.loads(model_json.read_text())
        result.setdefault("training", {})["postprocess"] = {
            k: spec.get(k) for k in ("threshold", "min_component_mm3")}
    qc_threshold = refit_qc(run, args) if args.refit_qc else None
    if qc_threshold is not None:
        result["qc_threshold_refit"] = qc_threshold
    result["scan_support"] = args.scan_support
    result["cohorts"] = {}
    result["inputs"] = args.inputs
    for name in args.cohorts:
        for inputs in args.inputs:
            drop, suffix = INPUTS[inputs]
            cohort = data[name] if drop is None else cohort_without(
                data[name], drop, data[name].with_name(f"{data[name].name}{suffix}"))
            pred = work / "preds" / f"{args.label}_{name}{suffix}"
            t = time.perf_counter()
            clotseg("predict", str(run), str(cohort), str(pred), "--quiet",
                    "--device", args.device, *predict_options(args))
            secs = time.perf_counter() - t
            result["cohorts"][f"{name}{suffix}"] = {
                "inputs": ["cta", "ncct"] if drop is None else [inputs],
                "predict_seconds_per_case": round(secs / args.test_cases, 2),
                **score(pred, cohort, qc_threshold)}
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
