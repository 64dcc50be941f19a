"""Training throughput: the full step (sampling, gathering, augmentation, crop, model step)
against the bare model step on random tensors already on the device, same model, batch and
patch, measured in the same run. Prints one JSON object.

The bare step is the ceiling: the closer ``ratio`` is to 1, the less the data path costs.
The target on a GPU (original U-Net, 256 x 256, bf16): ratio >= 0.9.

    python benchmarks/train_throughput.py                     # CPU defaults, about a minute
    python benchmarks/train_throughput.py --device cuda       # GPU defaults (§11 setting)
    python benchmarks/train_throughput.py --device cuda --compile --out result.json
    python benchmarks/train_throughput.py --precision bf16   # CPU bf16, fp32 baseline too
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)

CPU = {"model": "unet-original", "base": 16, "batch": 16, "patch": 64, "slab": 3, "cases": 6,
       "steps": 12, "warmup": 3}
GPU = {"model": "unet-original", "base": 32, "batch": 64, "patch": 256, "slab": 1, "cases": 40,
       "steps": 100, "warmup": 20}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    for key in CPU:
        p.add_argument(f"--{key}", type=type(CPU[key]), default=None,
                       help=f"default {CPU[key]} on CPU, {GPU[key]} on GPU")
    p.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast (GPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="train.precision (bf16 = also on the CPU)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--loader", default="auto", choices=["auto", "resident", "stream"])
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (stream loader)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--data", help="dataset to use instead of a generated phantom cohort")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, warmup: int, device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from clotseg.config import Config
    from clotseg.data.cache import build_cache
    from clotseg.data.dataset import BatchFactory, SliceSampler, batch_iterator, batch_seed
    from clotseg.inference.engine import resolve_precision
    from clotseg.io.layouts import discover
    from clotseg.models.volumetric import memory_format
    from clotseg.training.losses import make_loss
    from clotseg.training.optim import make_optimizer
    from clotseg.training.trainer import (
        VOLUMETRIC_MODELS,
        build_model,
        make_source,
        model_spec,
        resolve_device,
        train_step,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    d = GPU if device.type == "cuda" else CPU
    s = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in d.items()}
    cfg = Config()
    cfg.model.name, cfg.model.base = s["model"], s["base"]
    cfg.data.slab, cfg.data.patch, cfg.data.loader = s["slab"], s["patch"], args.loader
    cfg.data.workers = args.workers
    cfg.train.batch_size, cfg.train.amp = s["batch"], not args.no_amp
    cfg.train.precision = args.precision
    cfg.train.channels_last, cfg.train.compile = not args.no_channels_last, args.compile
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not data:
            from clotseg.synth import write_cohort

            data = write_cohort(Path(tmp) / "data", s["cases"], seed=0, size="small",
                                progress=False).parent
        cases = build_cache(discover(data).cases, Path(tmp) / "cache",
                            cfg.data.windows, progress=False)
        source, mode = make_source(cases, cfg, device)
        factory = BatchFactory(source, SliceSampler(cases, cfg.data.clot_fraction,
                                                    cfg.data.patch),
                               cfg.train.batch_size, cfg.data.patch, cfg.augment,
                               cfg.data.windows,
                               volumetric=cfg.model.name in VOLUMETRIC_MODELS)
        torch.manual_seed(0)
        model = build_model(model_spec(cfg)).to(device)
        if cfg.train.channels_last:  # 2D or 3D layout, as the trainer takes it
            model = model.to(memory_format=memory_format(model))
        net = torch.compile(model) if cfg.train.compile else model
        optim = make_optimizer(cfg, model.parameters(), device)
        loss_fn = make_loss(cfg.train.loss)
        model.train()

        x0, y0 = factory.make(0)
        x_r = torch.rand_like(x0, device=device)
        y_r = (torch.rand_like(y0, device=device) > 0.97).float()

        def bare():
            train_step(net, model, x_r, y_r, optim, loss_fn, cfg, device)

        n = s["warmup"] + s["steps"]
        batches = batch_iterator(factory, [batch_seed(1, i) for i in range(n)], args.workers,
                                 pin_memory=device.type == "cuda")

        def full():
            x, y = next(batches)
            train_step(net, model, x, y, optim, loss_fn, cfg, device)

        t_bare = _timed(bare, s["steps"], s["warmup"], device)
        t_full = _timed(full, s["steps"], s["warmup"], device)
        t_fp32 = None
        if args.precision == "bf16":  # the fp32 full step as the baseline, same process
            chosen, cfg.train.precision = cfg.train.precision, "fp32"
            batches = batch_iterator(factory, [batch_seed(1, i) for i in range(n)],
                                     args.workers, pin_memory=device.type == "cuda")
            t_fp32 = _timed(full, s["steps"], s["warmup"], device)
            cfg.train.precision = chosen
    b = cfg.train.batch_size
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
             "threads)",
        "model": f"{s['model']} base {s['base']}", "batch": b, "patch": s["patch"],
        "channels": 2 * s["slab"], "loader": mode, "workers": args.workers,
        "amp_bf16": resolve_precision(device, cfg.train.precision) == "bf16"
        and cfg.train.amp,
        "channels_last": bool(cfg.train.channels_last),
        "compile": cfg.train.compile, "steps": s["steps"],
        "bare_slices_per_s": round(b / t_bare, 1), "full_slices_per_s": round(b / t_full, 1),
        "ratio": round(t_bare / t_full, 3), "torch": torch.__version__,
    }
    if t_fp32 is not None:
        result["fp32_full_slices_per_s"] = round(b / t_fp32, 1)
        result["bf16_speedup_full"] = round(t_fp32 / t_full, 3)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
