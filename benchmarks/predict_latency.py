"""Prediction latency: seconds per case from the files on disk to the written mask, for the
``clotseg predict`` path against a plain fp32 eager loop (one slice at a time, no
batching, no inference mode, nothing skipped), same model and case, measured in the same
run. Prints one JSON object.

Both paths read the same NIfTI files, resample/normalise the same way, post-process and
write the mask with the same code; only the network part differs. ``dice_vs_baseline``
compares the two masks (1.0 = same segmentation); ``dice_vs_truth`` compares each with the
phantom's clot (meaningful with a trained ``--run``). The target on 2 CPU cores:
speed-up ≥ 2 at the same Dice.

    python benchmarks/predict_latency.py                          # fresh unet-original
    python benchmarks/predict_latency.py --run RUN --sizes small  # a trained run
    python benchmarks/predict_latency.py --precision fp32 bf16 --out result.json
    python benchmarks/predict_latency.py --sizes clinical --out benchmarks/results/predict_latency_clinical_cpu.json

``--sizes clinical`` is the real-size benchmark: one ``clotseg synth --size clinical`` case
(512 × 512 × 280–400 CTA, 2.5–5 mm NCCT on its own, slightly moved grid), the default
model (``unet-original`` base 16, 2.5D slab 3) in a run folder whose ``model.json``
preprocessing is what ``clotseg train`` resolves for a ``clotseg preprocess`` dataset
made with the defaults (registration, automatic 120 mm ROI, the CTA's own spacing; see
clinical.trained_preprocessing), as ``predict`` runs it, stage by stage (read, register,
ROI, infer, restore, write, measure) with the peak resident memory of the process. Each path runs in a fresh process, so peaks do not
mix. The plain baseline is the whole volume slice by slice, without ROI, fp32; its
network part is timed on ``--baseline-slices`` evenly spread slices and scaled to all
slices (the JSON says so), so the benchmark stays within minutes on two cores. The
registration is also run on its own and compared with the case's true motion
(``registration``: landmark error in mm). Predict's stages and the registration carry
CPU seconds next to wall seconds: on a shared machine they are what load does not inflate.
nnU-Net v2 2d prediction of the same case is timed when ``nnunetv2`` is installed and a
trained 2d model folder is given with ``--nnunet-model``; otherwise the JSON says why not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["medium", "full"],
                   choices=["small", "medium", "full", "clinical"],
                   help="phantom sizes (default medium full; clinical: see above)")
    p.add_argument("--baseline-slices", type=int, default=12,
                   help="clinical: slices the plain baseline's network is timed on")
    p.add_argument("--nnunet-model", help="clinical: a trained nnU-Net v2 2d model folder")
    p.add_argument("--nnunet-timeout", type=float, default=900.0, metavar="S",
                   help="clinical: stop nnU-Net's prediction after S seconds (on a small "
                        "CPU a whole head takes hours); the JSON then says so")
    p.add_argument("--seed", type=int, default=7, help="phantom case seed")
    p.add_argument("--model", default="unet-original", help="registered model name")
    p.add_argument("--base", type=int, default=32, help="model width (32 = original size)")
    p.add_argument("--slab", type=int, default=3, help="slices per modality (2.5D)")
    p.add_argument("--run", help="use this trained run folder instead of a fresh model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--precision", nargs="+", default=["auto"],
                   help="precisions of the optimised path to measure (auto, fp32, bf16)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="runs per path (minimum is kept)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain loop")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def fresh_run(folder: Path, args) -> Path:
    """A run folder holding a freshly initialised network (seeded)."""
    import torch

    from clotseg.models import create_model
    from clotseg.runs import ModelSpec, save_model_spec

    kwargs = {"in_channels": 2 * args.slab, "base": args.base}
    torch.manual_seed(0)
    model = create_model(args.model, **kwargs)
    save_model_spec(folder, ModelSpec(args.model, kwargs, slab=args.slab))
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_name": args.model, "model_kwargs": kwargs,
                "epoch": 0}, folder / "checkpoints" / "best.pt")
    return folder


def write_phantom(folder: Path, size: str, seed: int):
    """One phantom case as NIfTI files; returns (case folder, truth mask array)."""
    from clotseg.io.readers import write_volume
    from clotseg.synth import make_case

    case = make_case(seed, size, clot=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(case.cta, folder / "cta.nii.gz")
    write_volume(case.ncct, folder / "ncct.nii.gz")
    return folder, np.asarray(case.clot.array) > 0, case.cta.shape


def plain_loop(model, image: np.ndarray, slab_size: int, multiple: int, device) -> np.ndarray:
    """The baseline network part: one slice at a time, fp32, eager, nothing skipped."""
    import torch

    from clotseg.data.slabs import pad_to_multiple, slab

    out = np.zeros(image.shape[1:], dtype=np.float32)
    with torch.no_grad():
        for z in range(image.shape[-1]):
            x, crop = pad_to_multiple(slab(image, z, slab_size), multiple)
            y = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x))[None].to(device)))
            out[:, :, z] = y[0, 0].cpu().numpy()[crop]
    return out


def baseline_case(run: Path, case_dir: Path, out: Path, device: str) -> dict:
    """Files → mask with the plain loop; the steps around the network are predict's."""
    from clotseg.data.slabs import prepare_case
    from clotseg.inference.postprocess import postprocess
    from clotseg.inference.predictor import ncct_on_cta_grid
    from clotseg.io.readers import read_volume, write_volume
    from clotseg.io.volume import Volume
    from clotseg.runs import load_model

    model, spec = load_model(run, device=device)
    seconds = {}
    c0, t0 = time.process_time(), time.perf_counter()
    cta, ncct = read_volume(case_dir / "cta.nii.gz"), read_volume(case_dir / "ncct.nii.gz")
    t1 = time.perf_counter()
    ncct = ncct_on_cta_grid(cta, ncct)
    prep = prepare_case("case", cta, ncct, None, {k: tuple(v) for k, v in spec.windows.items()})
    prob = prep.orientation.from_canonical(
        plain_loop(model, prep.image, spec.slab, spec.pad_multiple, device))
    mask = postprocess(prob, cta.spacing, threshold=spec.threshold,
                       min_component_mm3=spec.min_component_mm3)
    t2 = time.perf_counter()
    write_volume(Volume.on_grid(mask, cta.grid), out / "case.nii.gz", mask=True)
    t3 = time.perf_counter()
    seconds.update(read=t1 - t0, predict=t2 - t1, write=t3 - t2)
    return {"seconds": t3 - t0, "cpu_seconds": time.process_time() - c0, "steps": seconds,
            "mask": mask.astype(bool)}


def optimised_case(run: Path, case_dir: Path, out: Path, device: str, precision: str,
                   batch_size: int) -> dict:
    """Files → mask with the ``clotseg predict`` path (model loaded beforehand)."""
    from clotseg.api import predict_case
    from clotseg.inference.predictor import Predictor
    from clotseg.io.layouts import discover
    from clotseg.io.readers import read_volume

    predictor = Predictor.from_runs(run, device=device, precision=precision,
                                    batch_size=batch_size)
    case = discover(case_dir).cases[0]
    c0 = time.process_time()
    res = predict_case(predictor, case, out)  # CPU time includes measuring the clots
    cpu = time.process_time() - c0
    if not res.ok:
        raise RuntimeError(f"prediction failed: {res.error}")
    s = res.seconds
    return {"seconds": s["read"] + s["predict"] + s["write"], "cpu_seconds": cpu,
            "steps": {k: s[k] for k in ("read", "predict", "write", "measure")},
            "precision": predictor.describe()["precision"],
            "mask": np.asarray(read_volume(res.mask_path).array) > 0}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else float(2 * (a & b).sum() / denom)


def best_of(fn, repeats: int) -> dict:
    """Fastest of ``repeats`` runs. Each also reports the CPU seconds the process used
    (all threads), less sensitive than wall time to other programs on a shared machine."""
    return min((fn() for _ in range(max(1, repeats))), key=lambda r: r["seconds"])


def measure_size(size: str, run: Path, tmp: Path, args, device: str) -> dict:
    case_dir, truth, shape = write_phantom(tmp / size / "case", size, args.seed)
    out = tmp / size / "out"
    out.mkdir(parents=True, exist_ok=True)
    row: dict = {"size": size, "shape": list(shape), "truth_voxels": int(truth.sum())}
    paths = {}
    if not args.no_baseline:
        paths["baseline"] = best_of(lambda: baseline_case(run, case_dir, out, device),
                                    args.repeats)
    for precision in args.precision:
        paths[f"optimised_{precision}"] = best_of(lambda p=precision: optimised_case(
            run, case_dir, out, device, p, args.batch_size), args.repeats)
    base = paths.get("baseline")
    for name, r in paths.items():
        entry = {"seconds": round(r["seconds"], 3), "cpu_seconds": round(r["cpu_seconds"], 3),
                 "steps": {k: round(v, 3) for k, v in r["steps"].items()},
                 "dice_vs_truth": round(dice(r["mask"], truth), 4),
                 "mask_voxels": int(r["mask"].sum())}
        if "precision" in r:
            entry["precision"] = r["precision"]
        if base is not None and name != "baseline":
            entry["speedup"] = round(base["seconds"] / r["seconds"], 2)
            entry["cpu_speedup"] = round(base["cpu_seconds"] / r["cpu_seconds"], 2)
            entry["dice_vs_baseline"] = round(dice(r["mask"], base["mask"]), 4)
        row[name] = entry
    return row


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from clotseg.inference.predictor import available_cpus, resolve_device

    torch.set_num_threads(args.threads or available_cpus())
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = Path(args.run) if args.run else fresh_run(tmp / "run", args)
        spec = json.loads((run / "model.json").read_text())
        sizes = [z for z in args.sizes if z != "clinical"]
        result = {
            "benchmark": "predict_latency", "device": device,
            "device_name": (torch.cuda.get_device_name(0) if device.startswith("cuda")
                            else platform.processor() or platform.machine()),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "model": spec["model_name"], "model_kwargs": spec["model_kwargs"],
            "slab": spec["slab"], "trained_run": bool(args.run),
            "baseline": "plain fp32 eager loop, one slice per forward pass",
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "cases": [measure_size(size, run, tmp, args, device) for size in sizes],
        }
        if "clinical" in args.sizes:
            from clinical import measure_clinical  # benchmarks/clinical.py

            result["clinical"] = measure_clinical(tmp / "clinical", args, device)
            if not sizes:
                for key in ("model", "model_kwargs", "slab", "baseline", "cases"):
                    result.pop(key, None)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
