"""clotseg side by side with nnU-Net v2 at the same wall-clock training budget.

Both tools train on the same cohort for the same budget, predict the same test cohorts,
and are scored by clotseg's evaluation.

nnU-Net runs through its own commands at its defaults (plan and preprocess, ``2d`` and
optionally ``3d_fullres`` on one fold, prediction with its default mirroring), except for
the trainer: ``nnunet_budget.py`` stops at the first epoch end past the
budget. clotseg runs ``clotseg train --time-limit`` (with no internal test split: the test
cohorts are separate) and ``clotseg predict``. Needs the ``bench`` extra
(``pip install -e '.[bench]'``).

    python benchmarks/peer_nnunet.py --quick                          # smoke test, minutes
    python benchmarks/peer_nnunet.py --train-data train --test-data same shifted \\
        --budget-min 30 --out benchmarks/results/peer_nnunet_cpu.json
    python benchmarks/peer_nnunet.py --budget-min 30 --3d            # cohorts generated

Without ``--train-data`` / ``--test-data`` phantom cohorts are generated
(``clotseg.synth.cohort.write_cohort``; the test cohort from another seed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)

from clotseg.io.orientation import orientation_of
from clotseg.io.volume import Grid, Volume

HERE = Path(__file__).resolve().parent
WRAPPER = HERE / "nnunet_budget.py"  # nnU-Net's train/predict with the budget trainer
TRAINER = "nnUNetTrainerBudget"
BUDGET_ENV = "CLOTSEG_NNUNET_BUDGET_S"  # read by nnunet_budget.py
ITERATIONS_ENV = "CLOTSEG_NNUNET_ITERATIONS"  # likewise; --quick only
DATASET_ID = 917
DATASET = f"Dataset{DATASET_ID:03d}_Clot"
DEFAULT_OUT = {"cpu": "benchmarks/results/peer_nnunet_cpu.json",
               "cuda": "benchmarks/results/peer_nnunet_gpu.json"}
QUICK = {"cases": 6, "test_cases": 3, "budget_min": 2.0}
QUICK_ITERATIONS = 20  # nnU-Net iterations per epoch in --quick (default 250)
FULL = {"cases": 40, "test_cases": 20, "budget_min": 30.0}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("    python"):])
    p.add_argument("--train-data", metavar="DIR",
                   help="training cohort (case folders <case>/cta, ncct, clot); generated "
                        "when not given")
    p.add_argument("--test-data", nargs="+", metavar="DIR",
                   help="test cohort(s), scored one by one; one is generated when not given")
    p.add_argument("--budget-min", type=float,
                   help=f"training wall-clock budget per tool and configuration, minutes "
                        f"(default {FULL['budget_min']:g}, --quick {QUICK['budget_min']:g})")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="also train and score nnU-Net 3d_fullres")
    p.add_argument("--fold", default="0",
                   help="nnU-Net fold (0-4 or 'all'); clotseg trains on its matching "
                        "5-fold split (default 0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="device of both tools (default cpu)")
    p.add_argument("--no-clotseg", action="store_true", help="score nnU-Net only")
    p.add_argument("--cases", type=int,
                   help=f"size of a generated training cohort (default {FULL['cases']}, "
                        f"--quick {QUICK['cases']})")
    p.add_argument("--test-cases", type=int,
                   help=f"size of a generated test cohort (default {FULL['test_cases']}, "
                        f"--quick {QUICK['test_cases']})")
    p.add_argument("--size", default="small", choices=["small", "medium", "full"],
                   help="phantom size of generated cohorts (default small)")
    p.add_argument("--seed", type=int, default=0, help="seed of generated training cohort; "
                                                       "the test cohort uses seed+1000")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny cohorts, a 2-minute budget, nnU-Net epochs of "
                        f"{QUICK_ITERATIONS} iterations and no mirroring at prediction "
                        "(not comparable numbers)")
    p.add_argument("--work", metavar="DIR",
                   help="keep the nnU-Net tree, runs and predictions here (default: a "
                        "temporary folder, deleted at the end)")
    p.add_argument("--out", help="JSON result file (default benchmarks/results/"
                                 "peer_nnunet_<cpu|gpu>.json; --quick: print only)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("cases", "test_cases", "budget_min"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT[args.device]
    if args.fold != "all" and args.fold not in {str(k) for k in range(5)}:
        p.error(f"--fold must be 0-4 or 'all', got {args.fold!r}")
    if args.budget_min <= 0:
        p.error("--budget-min must be positive")
    return args


def require_nnunet() -> str:
    """nnU-Net v2's version, or exit with a message saying how to install it."""
    if importlib.util.find_spec("nnunetv2") is None:
        sys.exit("nnU-Net v2 is not installed; install the benchmark extra: "
                 "pip install -e '.[bench]'")
    from importlib.metadata import version

    return version("nnunetv2")


# --- data -----------------------------------------------------------------------------

def cohort(given: str | None, work: Path, name: str, cases: int, seed: int,
           size: str = "small") -> Path:
    """A given cohort folder, or a phantom cohort written under ``work``."""
    if given:
        path = Path(given)
        if not path.is_dir():
            sys.exit(f"{path}: cohort folder does not exist")
        return path
    from clotseg.synth.cohort import write_cohort

    path = work / name
    print(f"writing phantom cohort {path} ({cases} {size} cases, seed {seed})", flush=True)
    write_cohort(path, cases, seed=seed, size=size, progress=False)
    return path


def write_nnunet_images(case, images: Path, labels: Path | None) -> Grid:
    """One case in nnU-Net's raw layout: ``<case>_0000`` CTA, ``_0001`` NCCT (resampled onto
    the CTA grid: nnU-Net needs one grid for all channels), and with ``labels`` the clot
    mask. Returns the CTA grid, onto which :func:`restore_prediction` maps nnU-Net's mask.

    nnU-Net does not reorient images (its 2d configuration slices along the first array
    axis of every file, whatever that is in the patient), so each case is given to it in
    one orientation, as an nnU-Net user would prepare the data: clotseg's canonical
    (L, P, S) axis order, a pure permutation and flip of the voxels, with the spacing
    permuted alike."""
    from clotseg.io.readers import write_volume
    from clotseg.preprocess.resample import resample_to_grid

    vols = case.load(with_mask=labels is not None)
    grid = vols.cta.grid
    ncct = vols.ncct
    if not ncct.grid.same_as(grid):
        ncct = resample_to_grid(ncct, grid, default_value=-1000.0)
    write_volume(canonical(vols.cta), images / f"{case.case_id}_0000.nii.gz")
    write_volume(canonical(ncct), images / f"{case.case_id}_0001.nii.gz")
    if labels is not None:
        if vols.mask is None:
            sys.exit(f"{case.cta}: training case {case.case_id} has no clot mask")
        if not vols.mask.grid.same_as(grid):
            sys.exit(f"{case.files['mask']}: clot mask is not on the CTA grid")
        write_volume(canonical(vols.mask.with_array(vols.mask.array > 0)),
                     labels / f"{case.case_id}.nii.gz", mask=True)
    return grid


def canonical(vol: Volume) -> Volume:
    """``vol``'s voxels in canonical (L, P, S) order with the matching spacing (identity
    direction, zero origin: nnU-Net uses only the spacing)."""
    o = orientation_of(vol.grid)
    return Volume(np.ascontiguousarray(o.to_canonical(np.asarray(vol.array))),
                  o.canonical_spacing(vol.spacing))


def restore_prediction(src: Path, grid: Grid, dst: Path) -> None:
    """nnU-Net's canonical-order mask ``src`` back onto the case's CTA ``grid``."""
    from clotseg.io.readers import read_volume, write_volume

    if not src.is_file():  # scored as a missing prediction
        return
    arr = np.asarray(read_volume(src).array)
    back = orientation_of(grid).from_canonical(arr)
    write_volume(Volume.on_grid(np.ascontiguousarray(back), grid), dst, mask=True)


def to_nnunet_raw(train: Path, raw: Path) -> int:
    """Convert the training cohort to ``raw/DatasetXXX_Clot``; returns the case count."""
    from clotseg.io.layouts import discover

    root = raw / DATASET
    images, labels = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    index = discover(train)
    for case in index:
        write_nnunet_images(case, images, labels)
    dataset = {"channel_names": {"0": "CT", "1": "CT"},  # CTA, NCCT: nnU-Net's CT scheme
               "labels": {"background": 0, "clot": 1},
               "numTraining": len(index), "file_ending": ".nii.gz",
               "description": "clotseg phantom cohort (channel 0 CTA, channel 1 NCCT)"}
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return len(index)


def test_images(test: Path, folder: Path) -> dict[str, Grid]:
    """nnU-Net input folder (``<case>_0000/_0001``) of one test cohort; the CTA grid of
    each case."""
    from clotseg.io.layouts import discover

    folder.mkdir(parents=True)
    return {case.case_id: write_nnunet_images(case, folder, None) for case in discover(test)}


# --- running and scoring ---------------------------------------------------------------

CLOTSEG = [sys.executable, "-m", "clotseg.cli"]  # the clotseg of this interpreter


def command(name: str) -> str:
    """Path of a console script of this Python environment (nnUNetv2_*)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        sys.exit(f"{name}: command not found (install the bench extra in this environment)")
    return found


def wrapper(action: str) -> list[str]:
    """Command line of nnU-Net's ``train`` / ``predict`` with the budget trainer."""
    return [sys.executable, str(WRAPPER), action]


def run(args: list[str], log: Path, env: dict) -> float:
    """Run a command with its output in ``log``; seconds it took. Exits on failure."""
    print("$ " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        sys.exit("\n".join(tail) + f"\n{args[0]} failed (exit {rc}); full log: {log}")
    return seconds


def score(pred: Path, test: Path, out_csv: Path) -> dict:
    """clotseg's evaluation of a prediction folder, reduced to the compared numbers."""
    from clotseg.metrics.evaluate import evaluate_dirs

    _, s = evaluate_dirs(pred, test, out_csv)
    m = s["metrics"]
    return {
        "n_cases": s["n_cases"], "n_clot_cases": s["n_clot_cases"],
        "dice_median": m["dice"].get("median"), "dice_mean": m["dice"].get("mean"),
        "sensitivity": s["sensitivity"], "specificity": s["specificity"],
        "missed": s["missed"], "false_positive_cases": s["false_positive_cases"],
        "fp_components_per_case": s["fp_components_per_case"],
        "hd95_mm_median": m["hd95_mm"].get("median"), "hd95_undefined": m["hd95_mm"]["n_nan"],
        "abs_volume_error_mm3_median": m["abs_volume_error_mm3"].get("median"),
        "missing_predictions": s["missing_predictions"],
    }


def nnunet_env(work: Path, budget_s: float, quick: bool) -> dict:
    """Environment of the nnU-Net commands: its folders in ``work``, the budget."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "nnUNet_raw"),
               nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"),
               **{BUDGET_ENV: str(budget_s)})
    if quick:
        env[ITERATIONS_ENV] = str(QUICK_ITERATIONS)
    else:
        env.pop(ITERATIONS_ENV, None)
    return env


def bench_nnunet(args, work: Path, train: Path, tests: dict[str, Path], logs: Path) -> dict:
    env = nnunet_env(work, args.budget_min * 60, args.quick)
    configs = ["2d", "3d_fullres"] if args.three_d else ["2d"]
    n_train = to_nnunet_raw(train, work / "nnUNet_raw")
    inputs = {name: work / "nnunet_inputs" / name for name in tests}
    grids = {name: test_images(tests[name], inputs[name]) for name in tests}
    procs = str(cpus())  # worker processes only (nnU-Net's default, 8, overloads small CPUs)
    prep_s = run([command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c",
                  *configs, "-npfp", procs, "-np", procs, "--verify_dataset_integrity"],
                 logs / "nnunet_plan.log", env)
    out: dict = {"n_train_cases": n_train, "plan_and_preprocess_seconds": prep_s,
                 "configurations": {}}
    for cfg in configs:
        common = ["-tr", TRAINER, "-device", args.device]
        wall = run([*wrapper("train"), str(DATASET_ID), cfg, args.fold, *common],
                   logs / f"nnunet_train_{cfg}.log", env)
        fold_dir = (work / "nnUNet_results" / DATASET / f"{TRAINER}__nnUNetPlans__{cfg}"
                    / f"fold_{args.fold}")
        budget = json.loads((fold_dir / "budget.json").read_text())
        res: dict = {"train_seconds": budget["train_seconds"], "epochs": budget["epochs"],
                     "train_wall_seconds": wall, "stopped": budget["stopped"],
                     "iterations_per_epoch": budget["iterations_per_epoch"],
                     "iterations_done": budget.get("iterations_done"),
                     "batch_size": budget["batch_size"], "patch_size": budget["patch_size"],
                     "test": {}}
        for name, folder in inputs.items():
            raw_pred = work / "predictions" / f"nnunet_{cfg}_canonical" / name
            pred = work / "predictions" / f"nnunet_{cfg}" / name
            tta = ["--disable_tta"] if args.quick else []  # mirroring: 4x (2d), 8x (3d)
            seconds = run([*wrapper("predict"), "-i", str(folder), "-o", str(raw_pred), "-d",
                           str(DATASET_ID), "-c", cfg, "-f", args.fold, *common, *tta],
                          logs / f"nnunet_predict_{cfg}_{name}.log", env)
            pred.mkdir(parents=True)
            for case_id, grid in grids[name].items():
                restore_prediction(raw_pred / f"{case_id}.nii.gz", grid,
                                   pred / f"{case_id}.nii.gz")
            scores = score(pred, tests[name], work / "eval" / f"nnunet_{cfg}_{name}.csv")
            res["test"][name] = {**scores, "predict_seconds": seconds,
                                 "predict_seconds_per_case": seconds / len(grids[name])}
        out["configurations"][cfg] = res
        print(json.dumps({f"nnunet_{cfg}": res}, indent=1), flush=True)
    return out


def bench_clotseg(args, work: Path, train: Path, tests: dict[str, Path], logs: Path) -> dict:
    env = dict(os.environ)
    run_dir = work / "clotseg_run"
    train_args = [*CLOTSEG, "train", str(train), "--out", str(run_dir),
                  "--time-limit", f"{args.budget_min:g}", "--device", args.device,
                  "--set", "data.test_fraction=0"]  # the test cohorts are separate
    if args.fold != "all":  # clotseg has no 'all': it keeps fold 0 of 5 for validation
        train_args += ["--fold", args.fold]
    wall = run(train_args, logs / "clotseg_train.log", env)
    info = json.loads((run_dir / "train.json").read_text())
    res: dict = {"train_seconds": info["seconds"], "epochs": info["epochs_done"],
                 "train_wall_seconds": wall, "stopped": info["stopped"],
                 "n_train": info["n_train"], "n_val": info["n_val"], "test": {}}
    for name, test in tests.items():
        pred = work / "predictions" / "clotseg" / name
        seconds = run([*CLOTSEG, "predict", str(run_dir), str(test), str(pred),
                       "--device", args.device, "--quiet"], logs / f"clotseg_predict_{name}.log",
                      env)
        from clotseg.io.layouts import discover

        n = len(discover(test))
        res["test"][name] = {**score(pred, test, work / "eval" / f"clotseg_{name}.csv"),
                             "predict_seconds": seconds, "predict_seconds_per_case": seconds / n}
    print(json.dumps({"clotseg": res}, indent=1), flush=True)
    return res


def compare(clot: dict, nnunet: dict) -> dict:
    """The issue's three checks per nnU-Net configuration and test cohort: clotseg at least
    as good on median Dice and on false-positive components per case, and faster to
    predict."""
    out: dict = {}
    for cfg, res in nnunet["configurations"].items():
        for name, theirs in res["test"].items():
            ours = clot["test"][name]
            out[f"{cfg}/{name}"] = {
                "dice_median_at_least_nnunet": _ge(ours["dice_median"], theirs["dice_median"]),
                "fp_components_at_most_nnunet": _ge(theirs["fp_components_per_case"],
                                                    ours["fp_components_per_case"]),
                "predict_speedup": theirs["predict_seconds"] / ours["predict_seconds"],
            }
    return out


def _ge(a, b) -> bool | None:
    return None if a is None or b is None else a >= b


def cpus() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_available": cpus(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv=None) -> int:
    args = parse(argv)
    nnunet_version = require_nnunet()
    from clotseg import __version__ as clotseg_version

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="peer_nnunet_"))
    if args.work and work.exists() and any(work.iterdir()):
        sys.exit(f"{work}: --work folder is not empty")
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (work / "eval").mkdir(exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    done = False
    try:
        train = cohort(args.train_data, work, "train", args.cases, args.seed, args.size)
        if args.test_data:
            tests = {Path(t).name: cohort(t, work, "", 0, 0) for t in args.test_data}
            if len(tests) != len(args.test_data):
                sys.exit("--test-data folders need distinct names")
        else:
            tests = {"same_settings": cohort(None, work, "test_same_settings", args.test_cases,
                                             args.seed + 1000, args.size)}
        result: dict = {
            "benchmark": "peer_nnunet", "device": args.device,
            "budget_min_per_tool": args.budget_min, "fold": args.fold, "quick": args.quick,
            "train_data": str(train) if args.train_data else
            f"phantom, {args.cases} {args.size} cases, seed {args.seed}",
            "test_data": {k: (str(v) if args.test_data else f"phantom, {args.test_cases} "
                              f"{args.size} cases, seed {args.seed + 1000}")
                          for k, v in tests.items()},
            "versions": {"clotseg": clotseg_version, "nnunetv2": nnunet_version},
            "nnunet_settings": "defaults (nnUNetPlans, CT normalisation on both channels, "
                               "mirroring at prediction) except the trainer: stops at the "
                               "first epoch end past the budget, no fold validation; "
                               "planning/preprocessing workers = CPU cores"
                               + (f"; --quick: {QUICK_ITERATIONS} iterations per epoch, "
                                  "no mirroring at prediction" if args.quick else ""),
            "machine": machine(), "load_average_before": list(load_before),
        }
        result["nnunet"] = bench_nnunet(args, work, train, tests, logs)
        if not args.no_clotseg:
            result["clotseg"] = bench_clotseg(args, work, train, tests, logs)
            result["clotseg_vs_nnunet"] = compare(result["clotseg"], result["nnunet"])
        result["load_average_after"] = list(os.getloadavg())
        result["total_seconds"] = time.perf_counter() - t0
        result["work"] = str(work) if args.work else None
        done = True
    finally:
        if args.work or not done:
            print(f"work folder (logs, runs, predictions): {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
