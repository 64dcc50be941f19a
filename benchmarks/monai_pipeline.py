"""Training throughput of a typical MONAI input pipeline on the same data, model and step
as ``train_throughput.py``: a ``monai.data.DataLoader`` over a ``monai.data.Dataset`` of
dictionaries (one 2.5D slice each), with dictionary transforms (random crop, flips,
rotation/scale, intensity scale and shift, Gaussian noise) run per sample in worker
processes, batches copied to the device. Prints one JSON object with ``slices_per_s``.

This is the pipeline the issue compares clotseg's batched on-device path with (target:
clotseg ≥ 2.5× on a GPU). Same cohort cache, model, batch, patch and ``train_step``.

    python benchmarks/monai_pipeline.py --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py
from train_throughput import CPU, GPU, _sync  # benchmarks/train_throughput.py


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    for key in CPU:
        p.add_argument(f"--{key}", type=type(CPU[key]), default=None)
    p.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out")
    return p.parse_args(argv)


def transforms(patch: int):
    """The dictionary transforms of a typical MONAI 2D segmentation training script."""
    from monai import transforms as T

    keys = ["image", "label"]
    return T.Compose([
        T.RandSpatialCropd(keys, roi_size=(patch, patch), random_size=False),
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandAffined(keys, prob=0.5, rotate_range=(0.26,), scale_range=(0.1, 0.1),
                      mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
        T.RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        T.RandGaussianNoised("image", prob=0.3, std=0.02),
        T.EnsureTyped(keys, track_meta=False),
    ])


class SlabItems:
    """Item ``i``: the dictionary of one (case, slice) of the memory-mapped cache, half of
    them clot slices (as clotseg samples)."""

    def __init__(self, cases, slab: int, n: int, seed: int = 0):
        from clotseg.data.slabs import slab_indices

        rng = np.random.default_rng(seed)
        self.cases, self.slab, self.idx = cases, slab, slab_indices
        self.items = []
        for i in range(n):
            c = int(rng.integers(len(cases)))
            clot = cases[c].clot_slices
            z = int(rng.choice(clot)) if (i % 2 == 0 and clot.size) else int(
                rng.integers(cases[c].depth))
            self.items.append((c, z))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        c, z = self.items[i]
        case = self.cases[c]
        zz = self.idx(z, case.depth, self.slab)
        img = np.asarray(case.slices[zz], dtype=np.float32)  # (slab, 2, X, Y)
        img = img.transpose(1, 0, 2, 3).reshape(-1, *img.shape[2:])
        lab = np.asarray(case.mask_slices[z], dtype=np.float32)[None]
        return {"image": img, "label": lab}


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    from monai.data import DataLoader, Dataset

    from clotseg.config import Config
    from clotseg.data.cache import build_cache
    from clotseg.io.layouts import discover
    from clotseg.synth import write_cohort
    from clotseg.training.losses import make_loss
    from clotseg.training.optim import make_optimizer
    from clotseg.training.trainer import (
        build_model,
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
    cfg.model.name, cfg.model.base, cfg.data.slab = s["model"], s["base"], s["slab"]
    cfg.train.batch_size = s["batch"]
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cohort(Path(tmp) / "data", s["cases"], seed=0, size="small",
                            progress=False).parent
        cases = build_cache(discover(data).cases, Path(tmp) / "cache", cfg.data.windows,
                            progress=False)
        n = (s["warmup"] + s["steps"]) * s["batch"]
        ds = Dataset(SlabItems(cases, s["slab"], n), transform=transforms(s["patch"]))
        loader = DataLoader(ds, batch_size=s["batch"], shuffle=False, num_workers=args.workers,
                            pin_memory=device.type == "cuda", drop_last=True,
                            persistent_workers=False)
        torch.manual_seed(0)
        model = build_model(model_spec(cfg)).to(device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optim = make_optimizer(cfg, model.parameters(), device)
        loss_fn = make_loss(cfg.train.loss)
        model.train()
        t0, done = None, 0
        for i, batch in enumerate(loader):
            if i == s["warmup"]:
                _sync(device)
                t0 = time.perf_counter()
            train_step(model, model, batch["image"], batch["label"], optim, loss_fn, cfg,
                       device)
            done += i >= s["warmup"]
        _sync(device)
        seconds = time.perf_counter() - t0
    emit({"benchmark": "monai_pipeline", "device": str(device), "workers": args.workers,
          "model": f"{s['model']} base {s['base']}", "batch": s["batch"], "patch": s["patch"],
          "channels": 2 * s["slab"], "steps": done,
          "slices_per_s": round(done * s["batch"] / seconds, 1),
          "pipeline": "monai.data.DataLoader + Dataset of dicts, RandSpatialCropd, RandFlipd x2, "
                      "RandAffined, RandScaleIntensityd, RandShiftIntensityd, "
                      "RandGaussianNoised, EnsureTyped"}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
