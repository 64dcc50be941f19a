"""CPU latency of the onnxruntime engine against torch: seconds per case for the network
part of ``clotseg predict`` (the same prepared input, batching, empty-input skipping and
mapping back; only the engine differs), same weights, same phantom case, measured in the
same run. Prints one JSON object with the ratio onnx / torch and the Dice of the two masks.

    python benchmarks/onnx_latency.py                           # fresh unet-original, base 16
    python benchmarks/onnx_latency.py --run RUN --sizes medium  # a trained run
    python benchmarks/onnx_latency.py --out benchmarks/results/onnx_latency_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)
from predict_latency import fresh_run


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["small", "medium"],
                   choices=["small", "medium", "full"], help="phantom sizes (default small medium)")
    p.add_argument("--seed", type=int, default=7, help="phantom case seed")
    p.add_argument("--model", default="unet-original", help="registered model name")
    p.add_argument("--base", type=int, default=16, help="model width (16 = clotseg default)")
    p.add_argument("--slab", type=int, default=3, help="slices per modality (2.5D)")
    p.add_argument("--run", help="use this trained run folder instead of a fresh model")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="runs per engine (minimum is kept)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def timed(predictor, cta, ncct, repeats: int) -> tuple[float, np.ndarray]:
    best, prob = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        prob, _ = predictor.probability(cta, ncct)
        best = min(best, time.perf_counter() - t0)
    return best, prob


def main(argv=None) -> dict:
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import onnxruntime
    import torch

    from clotseg.inference.predictor import Predictor, available_cpus
    from clotseg.metrics.overlap import dice
    from clotseg.model_export import export_onnx
    from clotseg.synth import make_case

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else fresh_run(Path(tmp) / "run", args)
        onnx_file = export_onnx(run, Path(tmp) / "model.onnx")
        engines = {name: Predictor.from_runs(src, device="cpu", engine=name,
                                             batch_size=args.batch_size, num_threads=threads)
                   for name, src in (("torch", run), ("onnx", onnx_file))}
        cases = []
        for size in args.sizes:
            case = make_case(args.seed, size, clot=True)
            row = {"size": size, "shape": list(case.cta.shape)}
            probs = {}
            for name, predictor in engines.items():
                with predictor.threads():
                    seconds, probs[name] = timed(predictor, case.cta, case.ncct, args.repeats)
                row[f"{name}_seconds"] = round(seconds, 3)
            ref = probs["torch"]
            threshold = float(np.quantile(ref[ref > 0], 0.99)) if (ref > 0).any() else 0.5
            row["onnx_over_torch"] = round(row["onnx_seconds"] / row["torch_seconds"], 3)
            row["max_abs_prob_diff"] = float(np.abs(probs["onnx"] - ref).max())
            row["mask_threshold"] = round(threshold, 6)
            row["dice_onnx_vs_torch"] = round(float(dice(probs["onnx"] >= threshold,
                                                         ref >= threshold)), 6)
            cases.append(row)
    result = {
        "benchmark": "onnx_latency", "device": "cpu", "device_name": platform.machine(),
        "threads": threads, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "model": args.model, "base": args.base, "slab": args.slab,
        "trained_run": bool(args.run), "repeats": args.repeats,
        "what": "network part of predict (Predictor.probability), minimum over repeats",
        "load_average": [round(v, 2) for v in os.getloadavg()], "cases": cases,
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
