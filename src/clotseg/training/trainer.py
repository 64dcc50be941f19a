"""The training loop: splits → cache → model → epochs of (sample, augment, step) →
3D per-patient validation → checkpoints, metrics and curves in the RUN folder."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clotseg.config import Config
from clotseg.data.cache import CachedCase, build_cache
from clotseg.data.dataset import BatchMaker, SliceSampler
from clotseg.data.splits import load_splits, make_splits, save_splits
from clotseg.errors import ClotsegError
from clotseg.inference.engine import autocast_context, predict_probabilities
from clotseg.inference.postprocess import postprocess
from clotseg.io.atomic import write_text
from clotseg.io.layouts import discover
from clotseg.runs import CHECKPOINTS, SPLITS_JSON, ModelSpec, save_model_spec
from clotseg.training import distributed as D
from clotseg.training.checkpoint import load_checkpoint, rng_state, save_checkpoint
from clotseg.training.logging import plot_curves, read_metrics, write_metrics


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ClotsegError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


@dataclass
class TrainResult:
    run: Path
    best_dice: float
    best_epoch: int
    epochs_done: int
    seconds: float
    stopped: str  # "epochs", "early-stopping", "time-limit"


def model_spec(cfg: Config) -> ModelSpec:
    return ModelSpec(cfg.model.name, {"in_channels": 2 * cfg.data.slab, "base": cfg.model.base,
                                      "dropout": cfg.model.dropout},
                     slab=cfg.data.slab, windows={k: list(v) for k, v in cfg.data.windows.items()},
                     pad_multiple=cfg.data.pad_multiple, threshold=cfg.train.threshold,
                     min_component_mm3=cfg.train.min_component_mm3)


def _splits(run: Path, cfg: Config, ids: list[str], resume: bool) -> dict:
    existing = run / SPLITS_JSON
    if resume and existing.is_file():
        return load_splits(existing, ids)
    if cfg.data.splits:
        return load_splits(cfg.data.splits, ids)
    d = cfg.data
    return make_splits(ids, scheme=d.scheme, n_folds=d.n_folds, fold=d.fold,
                       test_fraction=d.test_fraction, val_fraction=d.val_fraction,
                       seed=d.split_seed)


def _lr_factor(cfg: Config, epoch: int) -> float:
    o = cfg.optim
    if epoch < o.warmup_epochs:
        return (epoch + 1) / (o.warmup_epochs + 1)
    if o.schedule == "constant":
        return 1.0
    span = max(1, cfg.train.epochs - o.warmup_epochs)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (epoch - o.warmup_epochs) / span))


def _optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adam":  # the original's L2 penalty: weight decay added to the gradient
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=0.99, nesterov=True,
                               weight_decay=o.weight_decay)
    raise ClotsegError(f"unknown optimiser {o.name!r} (adamw, adam, sgd)")


def validate(model, cases: list[CachedCase], cfg: Config, device, info: D.DistInfo) -> float:
    """Mean 3D Dice per patient over the validation cases (sharded over ranks)."""
    total, count = 0.0, 0.0
    for case in cases[info.rank::info.world]:
        prob = predict_probabilities(model, np.asarray(case.image, dtype=np.float32),
                                     slab=cfg.data.slab, pad_multiple=cfg.data.pad_multiple,
                                     batch_size=cfg.train.val_batch_size, device=device,
                                     amp=cfg.train.amp)
        pred = postprocess(prob, case.spacing, threshold=cfg.train.threshold,
                           min_component_mm3=cfg.train.min_component_mm3).astype(bool)
        ref = np.asarray(case.mask).astype(bool)
        denom = pred.sum() + ref.sum()
        total += 1.0 if denom == 0 else 2.0 * (pred & ref).sum() / denom
        count += 1
    total, count = D.all_sum([total, count], info)
    return float(total / max(count, 1))


def train(data: str | Path, run: str | Path, cfg: Config, *, resume: bool = False,
          npy_spacing=None, progress: bool = True) -> TrainResult:
    """Train a model on ``data`` into the RUN folder ``run``."""
    t_start = time.perf_counter()
    run = Path(run)
    device = resolve_device(cfg.train.device)
    info = D.init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    last_path = run / CHECKPOINTS / "last.pt"
    if resume and not last_path.is_file():
        raise ClotsegError(f"{last_path}: nothing to resume (no checkpoint in {run})")
    if not resume and last_path.is_file():
        raise ClotsegError(f"{run} already holds a trained run; use --resume to continue it or "
                           "choose another --out")

    index = discover(data, spacing=npy_spacing)
    splits = _splits(run, cfg, index.case_ids, resume)
    if info.main:
        run.mkdir(parents=True, exist_ok=True)
        write_text(run / "config.yaml", cfg.to_yaml())
        save_splits(run / SPLITS_JSON, splits)
        save_model_spec(run, model_spec(cfg))
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run / "cache"
    if info.main:  # rank 0 builds the cache; the others then open it
        build_cache(index.subset(splits["train"] + splits["val"]).cases, cache_dir,
                    cfg.data.windows, progress and info.main)
    D.barrier(info)
    train_cases = build_cache(index.subset(splits["train"]).cases, cache_dir, cfg.data.windows,
                              False)
    val_cases = build_cache(index.subset(splits["val"]).cases, cache_dir, cfg.data.windows, False)

    from clotseg.data.augment import augment_batch
    from clotseg.models import create_model
    from clotseg.training.losses import make_loss

    spec = model_spec(cfg)
    torch.manual_seed(cfg.train.seed)
    model = create_model(spec.model_name, **spec.model_kwargs).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optim = _optimizer(cfg, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda e: _lr_factor(cfg, e))
    loss_fn = make_loss(cfg.train.loss)
    start_epoch, best, best_epoch, bad = 0, -1.0, -1, 0
    rows = []
    if resume:
        ck = load_checkpoint(last_path, device)
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, best, best_epoch = ck["epoch"] + 1, ck["best_dice"], ck["best_epoch"]
        bad = ck["bad_epochs"]
        rows = [r for r in read_metrics(run / "metrics.csv") if r["epoch"] <= ck["epoch"] + 1]
    net = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_net = torch.compile(net) if cfg.train.compile else net

    sampler = SliceSampler(train_cases, cfg.data.clot_fraction)
    maker = BatchMaker(train_cases, cfg.data.slab, cfg.data.pad_multiple, device,
                       cfg.data.patch)
    limit_s = cfg.train.time_limit_min * 60 if cfg.train.time_limit_min else None
    stopped = "epochs"
    for epoch in range(start_epoch, cfg.train.epochs):
        seed = cfg.train.seed * 1_000_003 + epoch * 7919 + info.rank
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout
        model.train()
        t0, losses, n_slices = time.perf_counter(), [], 0
        steps = range(cfg.train.steps_per_epoch)
        bar = None
        if progress and info.main:
            from tqdm import tqdm

            bar = steps = tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False)
        timed_out = False
        for _ in steps:
            x, y = maker.make(sampler.draw(cfg.train.batch_size, gen), gen)
            x, y = augment_batch(x, y, cfg.augment, gen)
            if device.type == "cuda" and cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, cfg.train.amp):
                loss = loss_fn(step_net(x).float(), y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optim.step()
            losses.append(float(loss.detach()))
            n_slices += x.shape[0] * info.world
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}",
                                slices_s=f"{n_slices / (time.perf_counter() - t0):.0f}")
            if limit_s and D.broadcast_flag(time.perf_counter() - t_start > limit_s, info):
                timed_out = True
                break
        sched.step()
        loss_sum, loss_n = D.all_sum([float(np.sum(losses)), float(len(losses))], info)
        train_loss = loss_sum / max(loss_n, 1.0)
        dice = validate(model, val_cases, cfg, device, info)
        secs = time.perf_counter() - t0
        improved = dice > best
        if improved:
            best, best_epoch, bad = dice, epoch, 0
        else:
            bad += 1
        rows.append({"epoch": epoch + 1, "train_loss": train_loss, "val_dice": dice,
                     "lr": optim.param_groups[0]["lr"], "seconds": secs,
                     "slices_per_s": n_slices / secs, "best": improved})
        if info.main:
            payload = {"model": model.state_dict(), "model_name": spec.model_name,
                       "model_kwargs": spec.model_kwargs, "epoch": epoch, "val_dice": dice,
                       "best_dice": best, "best_epoch": best_epoch, "bad_epochs": bad,
                       "optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
                       "rng": rng_state(), "config": cfg.to_dict()}
            save_checkpoint(run / CHECKPOINTS / "last.pt", payload)
            if improved:
                save_checkpoint(run / CHECKPOINTS / "best.pt",
                                {k: payload[k] for k in ("model", "model_name", "model_kwargs",
                                                         "epoch", "val_dice", "config")})
            write_metrics(run / "metrics.csv", rows)
            plot_curves(run / "curves.png", rows)
            if progress:
                print(f"epoch {epoch + 1}: loss {train_loss:.4f}  val Dice {dice:.3f}"
                      f"{'  (best)' if improved else ''}  {secs:.0f}s", flush=True)
        if timed_out:
            stopped = "time-limit"
            break
        if bad >= cfg.train.patience:
            stopped = "early-stopping"
            break
    elapsed = time.perf_counter() - t_start
    result = TrainResult(run, best, best_epoch + 1, len(rows), elapsed, stopped)
    if info.main:
        write_text(run / "train.json", json.dumps({
            "best_val_dice": best, "best_epoch": best_epoch + 1, "epochs_done": len(rows),
            "seconds": elapsed, "stopped": stopped, "device": str(device),
            "world_size": info.world, "n_train": len(train_cases), "n_val": len(val_cases),
            "n_test": len(splits["test"]), "data": str(Path(data).resolve())}, indent=2))
    D.barrier(info)
    D.cleanup(info)
    return result
