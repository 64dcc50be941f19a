"""The training loop: splits → cache → model → epochs of (sample, augment, step) →
3D per-patient validation → checkpoints, metrics, curves and log in the RUN folder.

Reproducibility: every training batch is seeded from ``(seed, epoch, rank, step)`` and
dropout from ``(seed, epoch, rank)``, and the learning rate is a function of the step
count, so ``--resume`` from ``checkpoints/last.pt`` continues exactly as an uninterrupted
run would (bit for bit on CPU with ``train.deterministic``). The one exception is a time
limit with ``train.schedule_by_time``: then the schedule follows the clock.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clotseg.config import Config, check
from clotseg.data.cache import CachedCase, build_cache
from clotseg.data.dataset import (
    BatchFactory,
    MemmapSource,
    ResidentSource,
    SliceSampler,
    batch_iterator,
    batch_seed,
    canvas_size,
    resident_bytes,
)
from clotseg.data.splits import load_splits, make_splits, save_splits
from clotseg.errors import ClotsegError, ConfigError
from clotseg.inference.engine import autocast_context, predict_probabilities, prepare_model
from clotseg.inference.postprocess import postprocess
from clotseg.io.atomic import write_text
from clotseg.io.layouts import discover
from clotseg.metrics.overlap import dice as overlap_dice
from clotseg.runs import CHECKPOINTS, SPLITS_JSON, ModelSpec, save_model_spec
from clotseg.training import distributed as D
from clotseg.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from clotseg.training.logging import RunLog, plot_curves, read_metrics, write_metrics


@dataclass
class TrainResult:
    run: Path
    best_dice: float
    best_epoch: int  # 1-based
    epochs_done: int
    seconds: float
    stopped: str  # "epochs", "early-stopping", "time-limit"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ClotsegError("--device cuda requested but no CUDA device is available")
    return dev


def model_spec(cfg: Config) -> ModelSpec:
    """What ``predict`` needs besides the weights (saved as ``RUN/model.json``)."""
    kwargs = {"in_channels": 2 * cfg.data.slab, "base": cfg.model.base,
              "dropout": cfg.model.dropout, **cfg.model.kwargs}
    return ModelSpec(cfg.model.name, kwargs, slab=cfg.data.slab,
                     windows={k: [float(x) for x in v] for k, v in cfg.data.windows.items()},
                     pad_multiple=cfg.data.pad_multiple, threshold=cfg.train.threshold,
                     min_component_mm3=cfg.train.min_component_mm3, preprocess=None)


def build_model(spec: ModelSpec) -> torch.nn.Module:
    from clotseg.models import create_model

    try:
        return create_model(spec.model_name, **spec.model_kwargs)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None
    except TypeError as exc:
        raise ConfigError(f"model {spec.model_name!r}: bad arguments {spec.model_kwargs} "
                          f"({exc})") from None


class LRSchedule:
    """Learning-rate factor from training progress ``p`` in [0, 1]: linear warm-up, then
    cosine decay to ``min_lr_ratio`` (``cosine``), a one-cycle shape (rise from lr/25 over
    at least a quarter of training, cosine decay) or ``constant``.

    ``p`` is the step count over ``epochs * steps_per_epoch``; with a time limit and
    ``train.schedule_by_time``, the share of the time budget used, when that is larger,
    so that a time-limited run still ends its schedule with a small learning rate.
    """

    def __init__(self, cfg: Config, total_steps: int):
        self.o, self.total = cfg.optim, max(1, total_steps)
        self.step, self.progress = 0, 0.0

    def factor(self, p: float) -> float:
        o, p = self.o, min(max(p, 0.0), 1.0)
        if o.schedule == "constant":
            return min(1.0, p / o.warmup) if o.warmup and p < o.warmup else 1.0
        if o.schedule == "onecycle":
            w = max(o.warmup, 0.25)
            if p < w:
                return 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * p / w))
        else:
            w = o.warmup
            if p < w:
                return max(p / w, 0.01)
        q = (p - w) / max(1e-9, 1 - w)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * q))

    def advance(self, time_progress: float | None = None) -> float:
        """Progress after one more step (time progress: from rank 0, may be None)."""
        self.step += 1
        p = self.step / self.total
        if time_progress is not None:
            p = max(p, time_progress)
        self.progress = min(p, 1.0)
        return self.progress

    def state_dict(self) -> dict:
        return {"step": self.step, "progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.progress = int(state["step"]), float(state["progress"])


def make_optimizer(cfg: Config, params, device: torch.device | None = None
                   ) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD from ``cfg.optim`` (fused kernels on CUDA)."""
    o = cfg.optim
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, **fused)
    if o.name == "adam":  # the original's L2 penalty: weight decay added to the gradient
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, **fused)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0,
                           weight_decay=o.weight_decay)


def validate(model, cases: list[CachedCase], cfg: Config, device, info: D.DistInfo) -> float:
    """Mean 3D Dice per patient over the validation cases (sharded over ranks), on whole
    volumes predicted exactly as ``clotseg predict`` does (never augmented)."""
    import copy

    total, count = 0.0, 0.0
    mine = cases[info.rank::info.world]
    if mine:  # the inference-ready copy predict uses (batch norm folded, channels-last)
        model = prepare_model(copy.deepcopy(model), device, in_channels=2 * cfg.data.slab)
    for case in mine:
        prob = predict_probabilities(model, np.asarray(case.image, dtype=np.float32),
                                     slab=cfg.data.slab, pad_multiple=cfg.data.pad_multiple,
                                     batch_size=cfg.train.val_batch_size, device=device,
                                     amp=cfg.train.amp)
        pred = postprocess(prob, case.spacing, threshold=cfg.train.threshold,
                           min_component_mm3=cfg.train.min_component_mm3).astype(bool)
        total += overlap_dice(pred, np.asarray(case.mask))  # both empty: 1 (a correct "no clot")
        count += 1
    total, count = D.all_sum([total, count], info)
    return float(total / max(count, 1.0))


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


def _setup_torch(cfg: Config, device: torch.device) -> None:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def make_source(cases: list[CachedCase], cfg: Config, device: torch.device):
    """The batch source: the cohort in device memory when wanted and it fits, else the
    memory-mapped cache (read by DataLoader workers when ``data.workers`` > 0)."""
    canvas = canvas_size(cases, cfg.data.pad_multiple, cfg.data.patch)
    mode = cfg.data.loader
    if mode == "auto":
        fits = False
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            fits = resident_bytes(cases, canvas) < 0.5 * free
        mode = "resident" if fits else "stream"
    if mode == "resident":
        return ResidentSource(cases, cfg.data.slab, canvas, device), mode
    return MemmapSource(cases, cfg.data.slab, canvas), mode


@dataclass
class _State:
    """What changes from epoch to epoch (and is restored on resume)."""

    epoch: int = 0  # next epoch to run, 0-based
    best: float = -1.0
    best_epoch: int = -1
    bad: int = 0


def _payload(model, optim, sched: LRSchedule, st: _State, spec: ModelSpec, cfg: Config,
             epoch: int, dice: float) -> dict:
    return {"model": model.state_dict(), "model_name": spec.model_name,
            "model_kwargs": spec.model_kwargs, "epoch": epoch, "val_dice": dice,
            "best_dice": st.best, "best_epoch": st.best_epoch, "bad_epochs": st.bad,
            "optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
            "rng": rng_state(), "config": cfg.to_dict()}


class _Clock:
    """Time budget of a ``--time-limit`` run: when to stop and how far the schedule is."""

    def __init__(self, limit_min: float | None, t_start: float, progress0: float,
                 tail_passes: int = 1):
        self.limit = limit_min * 60 if limit_min else None
        self.t_start, self.t_loop = t_start, time.perf_counter()
        self.p0 = progress0
        self.val_s, self.step_s = 0.0, 0.0
        # passes over the validation cases still to come after the last step: the last
        # validation, and the post-processing tuning when it is on
        self.tail = tail_passes

    def should_stop(self) -> bool:
        if self.limit is None:
            return False
        return (time.perf_counter() - self.t_start + self.tail * self.val_s + self.step_s
                > self.limit)

    def progress(self) -> float | None:
        if self.limit is None:
            return None
        budget = self.limit - (self.t_loop - self.t_start) - self.tail * self.val_s
        used = (time.perf_counter() - self.t_loop) / max(budget, 1e-3)
        return self.p0 + (1 - self.p0) * min(used, 1.0)


def train(data: str | Path, run: str | Path, cfg: Config, *, resume: bool = False,
          npy_spacing=None, progress: bool = True) -> TrainResult:
    """Train a model on ``data`` into the RUN folder ``run`` (see the module docstring)."""
    t_start = time.perf_counter()
    check(cfg)
    run = Path(run)
    device = resolve_device(cfg.train.device)
    info, device = D.init_distributed(device)
    try:
        return _train(data, run, cfg, resume, npy_spacing, progress and info.main, device, info,
                      t_start)
    finally:
        D.cleanup(info)


def _train(data, run: Path, cfg: Config, resume: bool, npy_spacing, progress: bool,
           device: torch.device, info: D.DistInfo, t_start: float) -> TrainResult:
    _setup_torch(cfg, device)
    last_path = run / CHECKPOINTS / "last.pt"
    if resume and not last_path.is_file():
        raise ClotsegError(f"{last_path}: nothing to resume (no checkpoint in {run})")
    if not resume and last_path.is_file():
        raise ClotsegError(f"{run} already holds a trained run; use --resume to continue it or "
                           "choose another --out")
    spec = model_spec(cfg)
    model = build_model(spec)  # fails early on bad model settings
    index = discover(data, spacing=npy_spacing)
    # trained on `clotseg preprocess` output: predict repeats that preprocessing on raw
    # scans and maps the mask back onto the original CTA grid
    from clotseg.preprocess.pipeline import PreprocessSettings, inference_settings_of

    spec.preprocess = inference_settings_of(data)
    splits = _splits(run, cfg, index.case_ids, resume)
    if not splits["val"]:
        raise ClotsegError("the split has no validation cases; use more cases or another split")
    resample = None  # one voxel size for all cases (data.target_spacing), repeated by predict
    if spec.preprocess is None:
        from clotseg.data.spacing import resample_settings

        resample = resample_settings(cfg.data.target_spacing,
                                     index.subset(splits["train"]).cases)
        spec.preprocess = None if resample is None else PreprocessSettings.from_dict(resample)
    log = RunLog(run / "train.log", info.main, resume)
    if info.main:
        run.mkdir(parents=True, exist_ok=True)
        write_text(run / "config.yaml", cfg.to_yaml())
        save_splits(run / SPLITS_JSON, splits)
        save_model_spec(run, spec)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run / "cache"
    if info.main:  # rank 0 builds the cache; the others then open it
        build_cache(index.subset(splits["train"] + splits["val"]).cases, cache_dir,
                    cfg.data.windows, progress, resample)
    D.barrier(info)
    train_cases = build_cache(index.subset(splits["train"]).cases, cache_dir, cfg.data.windows,
                              False, resample)
    val_cases = build_cache(index.subset(splits["val"]).cases, cache_dir, cfg.data.windows,
                            False, resample)

    from clotseg.training.losses import make_loss

    torch.manual_seed(cfg.train.seed)
    model = build_model(spec).to(device)  # initial weights depend on the seed only
    if cfg.train.channels_last:  # also on CPU: oneDNN trains 1.4x faster (see README)
        model = model.to(memory_format=torch.channels_last)
    optim = make_optimizer(cfg, model.parameters(), device)
    sched = LRSchedule(cfg, cfg.train.epochs * cfg.train.steps_per_epoch)
    st, rows = _State(), []
    for group in optim.param_groups:  # the schedule's first value (warm-up starts low)
        group["lr"] = cfg.optim.lr * sched.factor(0.0)
    if resume:
        ck = load_checkpoint(last_path, device)
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        st = _State(ck["epoch"] + 1, ck["best_dice"], ck["best_epoch"], ck["bad_epochs"])
        rows = [r for r in read_metrics(run / "metrics.csv") if r["epoch"] <= ck["epoch"] + 1]
    net = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_net = torch.compile(net) if cfg.train.compile else net

    source, mode = make_source(train_cases, cfg, device)
    factory = BatchFactory(source, SliceSampler(train_cases, cfg.data.clot_fraction,
                                                cfg.data.patch),
                           cfg.train.batch_size, cfg.data.patch, cfg.augment,
                           cfg.data.windows)
    log.write(f"{'resumed' if resume else 'started'}: {len(train_cases)} training, "
              f"{len(val_cases)} validation, {len(splits['test'])} test cases; model "
              f"{spec.model_name} {spec.model_kwargs}; device {device} x {info.world}; "
              f"batches: {mode}, canvas {source.canvas}, patch {cfg.data.patch or 'full'}; "
              f"spacing {resample['spacing'] if resample else 'as stored'}")
    loss_fn = make_loss(cfg.train.loss)
    clock = _Clock(cfg.train.time_limit_min, t_start, sched.progress,
                   2 if cfg.train.tune_postprocess else 1)  # tuning + filter: one more pass
    stopped = "epochs"
    total_train_s = total_data_s = 0.0  # this session's training time and data wait
    total_slices = 0
    for epoch in range(st.epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        train_loss, n_slices, timed_out, data_s = _train_epoch(
            step_net, model, factory, optim, sched, loss_fn, cfg, device, info, epoch, clock,
            progress)
        t_train = time.perf_counter() - t0
        total_train_s, total_data_s, total_slices = (total_train_s + t_train,
                                                     total_data_s + data_s, total_slices + n_slices)
        t_val = time.perf_counter()
        dice = validate(model, val_cases, cfg, device, info)
        clock.val_s = time.perf_counter() - t_val
        improved = dice > st.best
        st.bad = 0 if improved else st.bad + 1
        if improved:
            st.best, st.best_epoch = dice, epoch
        secs = time.perf_counter() - t0
        rows.append({"epoch": epoch + 1, "train_loss": train_loss, "val_dice": dice,
                     "lr": optim.param_groups[0]["lr"], "seconds": secs,
                     "slices_per_s": n_slices / max(t_train, 1e-9),
                     "data_share": data_s / max(t_train, 1e-9), "best": improved})
        if info.main:
            payload = _payload(model, optim, sched, st, spec, cfg, epoch, dice)
            save_checkpoint(run / CHECKPOINTS / "last.pt", payload)
            if improved:
                save_checkpoint(run / CHECKPOINTS / "best.pt", payload)
            write_metrics(run / "metrics.csv", rows)
            plot_curves(run / "curves.png", rows)
            line = (f"epoch {epoch + 1}/{cfg.train.epochs}: loss {train_loss:.4f}  val Dice "
                    f"{dice:.3f}{'  (best)' if improved else ''}  lr {rows[-1]['lr']:.2e}  "
                    f"{rows[-1]['slices_per_s']:.0f} slices/s ("
                    f"{100 * rows[-1]['data_share']:.0f} % waiting for data)  {secs:.0f} s")
            log.write(line)
            if progress:
                print(line, flush=True)
        if timed_out:
            stopped = "time-limit"
            break
        if st.bad >= cfg.train.patience:
            stopped = "early-stopping"
            break
    tuned = None
    if info.main and cfg.train.tune_postprocess and st.best_epoch >= 0:
        tuned = _tune(model, run, val_cases, cfg, spec, device, log, progress)
    elapsed = time.perf_counter() - t_start
    result = TrainResult(run, st.best, st.best_epoch + 1, len(rows), elapsed, stopped)
    if info.main:
        log.write(f"stopped ({stopped}) after {len(rows)} epoch(s), {elapsed / 60:.1f} min; "
                  f"best validation Dice {st.best:.3f} at epoch {st.best_epoch + 1}")
        write_text(run / "train.json", json.dumps({
            "best_val_dice": st.best, "best_epoch": st.best_epoch + 1, "epochs_done": len(rows),
            "seconds": elapsed, "stopped": stopped, "device": str(device),
            "world_size": info.world, "batches": mode,
            "slices_per_s": round(total_slices / max(total_train_s, 1e-9), 2),
            "data_share": round(total_data_s / max(total_train_s, 1e-9), 4),
            "n_train": len(train_cases),
            "n_val": len(val_cases), "n_test": len(splits["test"]),
            "data": str(Path(data).resolve()),
            "postprocess": tuned.to_dict() if tuned else None,
            "component_filter": spec.component_filter}, indent=2))
    D.barrier(info)
    return result


def _tune(model, run: Path, val_cases: list[CachedCase], cfg: Config, spec: ModelSpec,
          device: torch.device, log: RunLog, progress: bool):
    """Pick threshold and smallest component on validation with the best weights and write
    them into ``model.json`` (see :mod:`clotseg.training.tuning`)."""
    import copy

    from clotseg.training.tuning import tune_postprocess, validation_probabilities

    best = copy.deepcopy(model)
    best.load_state_dict(load_checkpoint(run / CHECKPOINTS / "best.pt", device)["model"])
    probs = validation_probabilities(best, val_cases, cfg, device)
    tuned = tune_postprocess(best, val_cases, cfg, device, probs=probs)
    spec.threshold, spec.min_component_mm3 = tuned.threshold, tuned.min_component_mm3
    if cfg.train.fp_filter:
        spec.component_filter = _fit_filter(val_cases, probs, spec, log, progress)
    save_model_spec(run, spec)
    line = (f"post-processing chosen on validation: threshold {tuned.threshold:g}, components "
            f"< {tuned.min_component_mm3:g} mm³ dropped (val Dice {tuned.val_dice:.3f}; "
            f"configured {cfg.train.threshold:g} / {cfg.train.min_component_mm3:g} mm³: "
            f"{tuned.configured_val_dice:.3f})")
    log.write(line)
    if progress:
        print(line, flush=True)
    return tuned


def _fit_filter(val_cases: list[CachedCase], probs: list[np.ndarray], spec: ModelSpec,
                log: RunLog, progress: bool) -> dict | None:
    """Learn the false-positive component filter on the validation predictions
    post-processed with the tuned settings (:mod:`clotseg.inference.fp_filter`)."""
    from clotseg.inference.fp_filter import fit_component_filter

    data = [(postprocess(p, c.spacing, threshold=spec.threshold,
                         min_component_mm3=spec.min_component_mm3), p, np.asarray(c.mask),
             c.spacing) for c, p in zip(val_cases, probs)]
    filt, why = fit_component_filter(data)
    line = (f"false-positive filter: {why}" if filt is None else
            f"false-positive filter learned on {filt.fitted_on['components']} validation "
            f"components ({filt.fitted_on['not_clot']} not clot): score threshold "
            f"{filt.threshold:g}, val Dice {filt.fitted_on['val_dice']:.3f}")
    log.write(line)
    if progress:
        print(line, flush=True)
    return filt.to_dict() if filt else None


def train_step(step_net, model, x: torch.Tensor, y: torch.Tensor, optim, loss_fn, cfg: Config,
               device: torch.device) -> torch.Tensor:
    """One optimisation step (bf16 autocast on CUDA, channels-last, gradient clipping);
    returns the detached loss (not synchronised)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, cfg.train.amp):
        logits = step_net(x)
    loss = loss_fn(logits.float(), y)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optim.step()
    return loss.detach()


def _train_epoch(step_net, model, factory: BatchFactory, optim, sched: LRSchedule, loss_fn,
                 cfg: Config, device, info: D.DistInfo, epoch: int, clock: _Clock,
                 progress: bool) -> tuple[float, int, bool, float]:
    """One epoch of optimisation; returns (mean loss over ranks, slices, stopped early,
    seconds spent waiting for batches: the data path's share of the epoch, as far as the
    host sees it; on a GPU steps run asynchronously, so a slow data path shows here
    while a fast one hides behind queued steps)."""
    t = cfg.train
    seeds = [batch_seed(t.seed, epoch, info.rank, s) for s in range(t.steps_per_epoch)]
    torch.manual_seed(batch_seed(t.seed, epoch, info.rank, t.steps_per_epoch))  # dropout
    model.train()
    batches = batch_iterator(factory, seeds, cfg.data.workers, pin_memory=device.type == "cuda")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = batches = tqdm(batches, total=len(seeds), desc=f"epoch {epoch + 1}/{t.epochs}",
                             leave=False, unit="batch")
    t0 = time.perf_counter()
    # Losses are summed on the device and read back only for the progress bar, so that a
    # GPU is not synchronised after every step.
    loss_sum, n_steps, n_slices, timed_out = torch.zeros((), device=device), 0, 0, False
    time_p = None
    data_s, t_ready = 0.0, time.perf_counter()
    for x, y in batches:
        t_step = time.perf_counter()
        data_s += t_step - t_ready
        loss_sum += train_step(step_net, model, x, y, optim, loss_fn, cfg, device)
        n_steps += 1
        n_slices += x.shape[0] * info.world
        clock.step_s = time.perf_counter() - t_step
        stop = False
        if clock.limit is not None and (not info.enabled or n_steps % 10 == 1):
            # rank 0's clock decides for everyone (same stop step, same learning rate)
            flag, p = D.broadcast([float(clock.should_stop()), clock.progress()], info)
            stop, time_p = flag > 0, (p if t.schedule_by_time else None)
        p_step = sched.advance(time_p)
        for group in optim.param_groups:
            group["lr"] = cfg.optim.lr * sched.factor(p_step)
        if bar is not None and (n_steps % (25 if device.type == "cuda" else 5) == 1 or stop):
            bar.set_postfix(loss=f"{float(loss_sum) / n_steps:.3f}",
                            slices_s=f"{n_slices / (time.perf_counter() - t0):.0f}")
        if stop:
            timed_out = True
            break
        t_ready = time.perf_counter()
    if bar is not None:
        bar.close()
    loss_sum, loss_n = D.all_sum([float(loss_sum), float(n_steps)], info)
    return loss_sum / max(loss_n, 1.0), n_slices, timed_out, data_s
