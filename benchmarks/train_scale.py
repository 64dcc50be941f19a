"""Training at the size of real head CTAs: a cohort of clinical-size cases cached and
trained on, with the training process's memory sampled throughout. Prints one JSON object.

The cohort is ``--cases`` case folders (default 100) of ``clotseg synth --size clinical``
scans (512 x 512 x 280-400 CTA at 0.4-0.5 mm, 2.5-5 mm NCCT). Synthesising 100 distinct
whole heads would take half an hour on two cores and ~10 GB of disk, so ``--distinct``
cases (default 4) are synthesised and every case folder links to one of them; the cache,
the sampler and the memory do not know the difference (each case folder is read, cropped
and cached under its own name). ``clotseg train`` then runs as a user would run it on raw
whole-head scans, with ``data.roi=auto`` (every case cropped to the automatic 120 mm
Circle-of-Willis box when it is cached, ``data.target_spacing`` at its default), for
``--epochs`` short epochs, in its own process.

Measured:

* ``memory``: the train process's resident memory sampled every 0.2 s, split into its
  private part (``RssAnon``: what grows if anything were kept per case) and the pages of
  the memory-mapped cache and files (``RssFile``: the kernel's page cache, dropped under
  pressure, not the process's own), against the number of cases cached so far; the slope
  of private memory over the caching phase (MB per case) is the "no RAM growth" check.
* ``cache``: seconds per case and bytes on disk per case against the raw scans' voxels.
* ``throughput``: train's own ``slices_per_s`` and ``data_share`` (``train.json``) against
  the bare model step (same model, batch, crop, slab on random tensors, no data path)
  timed in this process after training: target ratio >= 0.85 on CPU.
* ``synthesis``: seconds per clinical-size case.

    python benchmarks/train_scale.py --threads 2 --out benchmarks/results/train_scale_cpu.json
    python benchmarks/train_scale.py --cases 12 --distinct 2 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)

#: Settings of the training run (the defaults otherwise): raw whole-head scans want the ROI.
TRAIN_SET = ["data.roi=auto"]
#: The ``clotseg`` command of this environment.
CLI = str(Path(sys.executable).with_name("clotseg"))
#: Target: train's slices/s over the bare model step's (the data path costs <= 15 %).
TARGET_RATIO = 0.85


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=100, help="case folders in the cohort")
    p.add_argument("--distinct", type=int, default=4, help="distinct synthesised cases")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    p.add_argument("--bare-steps", type=int, default=12, help="timed bare model steps")
    p.add_argument("--work", help="keep the cohort and run here (default: a temporary folder)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def synthesise(folder: Path, n: int, seed: int) -> dict:
    """``n`` clinical-size cases written by the CLI; returns the seconds it took."""
    t0 = time.perf_counter()
    subprocess.run([CLI, "synth", str(folder), "--cases", str(n),
                    "--seed", str(seed), "--size", "clinical", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    return {"cases": n, "seconds": round(seconds, 1), "seconds_per_case": round(seconds / n, 1)}


def link_cohort(distinct: Path, cohort: Path, n: int) -> list[str]:
    """``n`` case folders whose files are links to the distinct cases, in turn."""
    sources = sorted(p for p in distinct.iterdir() if p.is_dir())
    names = []
    for i in range(n):
        src, case = sources[i % len(sources)], cohort / f"case_{i:03d}"
        case.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file() and f.name != "motion.json":
                (case / f.name).symlink_to(f.resolve())
        names.append(case.name)
    return names


def _status(pid: int) -> dict[str, float] | None:
    """VmRSS, RssAnon, RssFile of ``pid`` in MB (None once it has ended)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def sample_memory(proc: subprocess.Popen, cache: Path, every: float = 0.2) -> list[dict]:
    """Memory of ``proc`` with the number of cases cached so far, until it ends."""
    rows: list[dict] = []
    t0 = time.perf_counter()
    while proc.poll() is None:
        st = _status(proc.pid)
        if st:
            cached = len(list(cache.glob("*.json"))) if cache.is_dir() else 0
            rows.append({"t": round(time.perf_counter() - t0, 2), "cached": cached, **st})
        time.sleep(every)
    return rows


def train(cohort: Path, run: Path, args) -> tuple[dict, list[dict], float]:
    """``clotseg train`` in its own process, memory sampled; (train.json, samples, s)."""
    cmd = [CLI, "train", str(cohort), "--out", str(run),
           "--epochs", str(args.epochs), "--set", f"train.steps_per_epoch={args.steps}",
           "--quiet"]
    for item in TRAIN_SET:
        cmd += ["--set", item]
    if args.threads:
        cmd += ["--set", f"train.threads={args.threads}"]
    log = (run.parent / "train_stdout.txt").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    samples: list[dict] = []
    sampler = threading.Thread(target=lambda: samples.extend(
        sample_memory(proc, run / "cache")))
    sampler.start()
    proc.wait()
    sampler.join()
    seconds = time.perf_counter() - t0
    log.close()
    if proc.returncode:
        tail = (run.parent / "train_stdout.txt").read_text()[-3000:]
        raise SystemExit(f"clotseg train failed ({proc.returncode}):\n{tail}")
    return json.loads((run / "train.json").read_text()), samples, seconds


def memory_summary(samples: list[dict], n_cases: int) -> dict:
    """Private and file-backed memory against cases cached, and its slope while caching."""
    caching = [s for s in samples if s["cached"] < n_cases]
    training = [s for s in samples if s["cached"] >= n_cases]
    at = {}
    for share in (0.1, 0.25, 0.5, 0.75, 1.0):
        k = max(1, round(share * n_cases))
        rows = [s for s in samples if s["cached"] == k] or [s for s in samples
                                                            if s["cached"] >= k]
        if rows:
            at[str(k)] = {"rss_anon_mb": round(max(r["RssAnon"] for r in rows)),
                          "rss_file_mb": round(max(r["RssFile"] for r in rows))}
    slope = None
    mid = [s for s in caching if s["cached"] >= max(2, n_cases // 10)]
    if len({s["cached"] for s in mid}) >= 3:  # leave out imports and the first cases
        x = np.array([s["cached"] for s in mid], float)
        y = np.array([s["RssAnon"] for s in mid], float)
        slope = float(np.polyfit(x, y, 1)[0])
    return {
        "samples": len(samples),
        "peak_rss_mb": round(max(s["VmHWM"] for s in samples)),
        "peak_rss_anon_mb": round(max(s["RssAnon"] for s in samples)),
        "peak_rss_anon_mb_caching": round(max((s["RssAnon"] for s in caching), default=0)),
        "peak_rss_anon_mb_training": round(max((s["RssAnon"] for s in training), default=0)),
        "peak_rss_file_mb_training": round(max((s["RssFile"] for s in training), default=0)),
        "rss_anon_slope_mb_per_case_caching": None if slope is None else round(slope, 2),
        "at_cases_cached": at,
    }


def bare_step(run: Path, steps: int, threads: int) -> dict:
    """The model step alone (random tensors, no data path) with the run's settings."""
    import torch

    from clotseg.config import load_yaml
    from clotseg.training.losses import make_loss
    from clotseg.training.optim import make_optimizer
    from clotseg.training.trainer import build_model, model_spec, train_step

    if threads:
        torch.set_num_threads(threads)
    cfg = load_yaml(run / "config.yaml")
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(model_spec(cfg))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optim = make_optimizer(cfg, model.parameters(), device)
    loss_fn = make_loss(cfg.train.loss)
    model.train()
    b, p, c = cfg.train.batch_size, cfg.data.patch, 2 * cfg.data.slab
    x = torch.rand(b, c, p, p)
    y = (torch.rand(b, 1, p, p) > 0.97).float()
    for _ in range(3):
        train_step(model, model, x, y, optim, loss_fn, cfg, device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, model, x, y, optim, loss_fn, cfg, device)
    seconds = (time.perf_counter() - t0) / steps
    return {"slices_per_s": round(b / seconds, 1), "steps": steps, "batch": b, "patch": p,
            "channels": c}


def cache_summary(run: Path, distinct: Path, seconds_caching: float, n_cases: int) -> dict:
    from clotseg.data.spacing import case_grid
    from clotseg.io.layouts import discover

    images = sorted((run / "cache").glob("*.image.npy"))
    shapes = [np.load(f, mmap_mode="r").shape for f in images]
    disk = sum(f.stat().st_size for f in (run / "cache").iterdir() if f.is_file())
    raw_voxels = [int(np.prod(case_grid(c).shape)) for c in discover(distinct).cases]
    cached_voxels = [int(np.prod((s[0], *s[2:]))) for s in shapes]
    return {"cases": len(images), "seconds": round(seconds_caching, 1),
            "seconds_per_case": round(seconds_caching / max(n_cases, 1), 2),
            "bytes_per_case_mb": round(disk / max(len(images), 1) / 2**20, 1),
            "raw_cta_voxels_median": int(np.median(raw_voxels)),
            "cached_voxels_median": int(np.median(cached_voxels)),
            "cached_share_of_raw_voxels": round(float(np.median(cached_voxels))
                                                / float(np.median(raw_voxels)), 3),
            "cached_shape_zcxy_example": list(shapes[0]) if shapes else None}


def main(argv=None) -> int:
    args = parse(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="train_scale_"))
    try:
        distinct, cohort, run = work / "distinct", work / "cohort", work / "run"
        for p in (cohort, run):
            shutil.rmtree(p, ignore_errors=True)
        synth = (synthesise(distinct, args.distinct, args.seed) if not distinct.is_dir()
                 else {"reused": str(distinct)})
        link_cohort(distinct, cohort, args.cases)
        load_before = os.getloadavg()
        info, samples, seconds = train(cohort, run, args)
        n = info["n_train"] + info["n_val"]
        first_train = next((s["t"] for s in samples if s["cached"] >= n), seconds)
        bare = bare_step(run, args.bare_steps, args.threads)
        ratio = info["slices_per_s"] / bare["slices_per_s"]
        mem = memory_summary(samples, n)
        result = {
            "benchmark": "train_scale",
            "device": "cpu", "machine": platform.machine(), "threads": args.threads or None,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "cohort": {"case_folders": args.cases, "distinct_cases": args.distinct,
                       "cached_for_training": n, "size": "clinical",
                       "note": "case folders link to the distinct synthesised cases; each "
                               "is read, cropped and cached under its own name"},
            "train_settings": TRAIN_SET + [f"train.steps_per_epoch={args.steps}",
                                           f"--epochs {args.epochs}"],
            "synthesis": synth,
            "cache": cache_summary(run, distinct, first_train, n),
            "memory": mem,
            "throughput": {"train_slices_per_s": info["slices_per_s"],
                           "train_data_share": info["data_share"],
                           "bare_model_step": bare,
                           "ratio_to_bare": round(ratio, 3), "target": TARGET_RATIO,
                           "met": bool(ratio >= TARGET_RATIO)},
            "train_seconds_total": round(seconds, 1),
            "epochs_done": info["epochs_done"], "split": {k: info[f"n_{k}"] for k in
                                                          ("train", "val", "test")},
        }
        emit(result, args.out)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
