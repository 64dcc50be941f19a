"""The training loop: splits → cache → model → epochs of (sample, augment, step) →
3D per-patient validation → checkpoints, metrics, curves and log in the RUN folder.

Reproducibility: every training batch is seeded from ``(seed, epoch, rank, step)`` and
dropout from ``(seed, epoch, rank)``, and the learning rate is a function of the step
count, so ``--resume`` from ``checkpoints/last.pt`` continues exactly as an uninterrupted
run would (bit for bit on CPU with ``train.deterministic``). The one exception is a time
limit with ``train.schedule_by_time``: then the schedule follows the clock.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clotseg.config import Config, check
from clotseg.data.cache import (
    CachedCase,
    build_cache,
    warm_page_cache,
    with_ncct_hu,
    with_views,
)
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
from clotseg.data.splits import clot_strata, load_splits, make_splits
from clotseg.devices import resolve_device
from clotseg.errors import ClotsegError, ConfigError
from clotseg.inference.engine import (
    autocast_context,
    cpu_has_native_bf16,
    predict_probabilities,
    prepare_model,
    resolve_precision,
)
from clotseg.inference.postprocess import postprocess
from clotseg.io.layouts import discover
from clotseg.io.outputs import check_run_apart
from clotseg.metrics.overlap import dice as overlap_dice
from clotseg.models import VOLUMETRIC_MODELS
from clotseg.models.volumetric import memory_format
from clotseg.runs import ModelSpec, Run, TrainSummary
from clotseg.training import distributed as D
from clotseg.training.checkpoint import rng_state, set_rng_state
from clotseg.training.ema import EmaWeights
from clotseg.training.logging import RunLog, plot_curves
from clotseg.training.losses import deep_supervision_loss
from clotseg.training.optim import Clock, LRSchedule, make_optimizer, setup_torch


@dataclass
class TrainResult:
    run: Path
    best_dice: float
    best_epoch: int  # 1-based
    epochs_done: int
    seconds: float
    stopped: str  # "epochs", "early-stopping", "time-limit"


def model_spec(cfg: Config) -> ModelSpec:
    """What ``predict`` needs besides the weights (saved as ``RUN/model.json``)."""
    kwargs = {"in_channels": 2 * cfg.data.slab, "base": cfg.model.base,
              "dropout": cfg.model.dropout, **cfg.model.kwargs}
    if cfg.model.mirror:  # only when on: earlier model.json files stay as they were
        kwargs["mirror"] = True
    if cfg.model.deep_supervision:  # likewise
        kwargs["deep_supervision"] = cfg.model.deep_supervision
    return ModelSpec(cfg.model.name, kwargs, slab=cfg.data.slab,
                     windows={k: [float(x) for x in v] for k, v in cfg.data.windows.items()},
                     pad_multiple=cfg.data.pad_multiple, threshold=cfg.train.threshold,
                     min_component_mm3=cfg.train.min_component_mm3,
                     grow_threshold=float(cfg.train.grow_threshold), preprocess=None,
                     modality_dropout=float(cfg.train.modality_dropout),
                     views=list(cfg.data.views), cta_mip=int(cfg.data.cta_mip))


def build_model(spec: ModelSpec) -> torch.nn.Module:
    from clotseg.models import create_model

    try:
        return create_model(spec.model_name, **spec.model_kwargs)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None
    except TypeError as exc:
        raise ConfigError(f"model {spec.model_name!r}: bad arguments {spec.model_kwargs} "
                          f"({exc})") from None


def validate(model, cases: list[CachedCase], cfg: Config, device, info: D.DistInfo) -> float:
    """Mean 3D Dice per patient over the validation cases (sharded over ranks), on whole
    volumes predicted exactly as ``clotseg predict`` does (never augmented), except that
    a model of several ``data.views`` is validated on its first view only: every view
    costs a full pass, and with three views the epochs' validation took as long as their
    training (the tuning after training, and ``predict``, use every view)."""
    import copy

    total, count = 0.0, 0.0
    mine = cases[info.rank::info.world]
    if mine:  # the inference-ready copy predict uses (batch norm folded, channels-last)
        model = prepare_model(copy.deepcopy(model), device, in_channels=2 * cfg.data.slab)
    for case in mine:
        prob = predict_probabilities(model, np.asarray(case.image, dtype=np.float32),
                                     slab=cfg.data.slab, pad_multiple=cfg.data.pad_multiple,
                                     batch_size=cfg.train.val_batch_size, device=device,
                                     amp=cfg.train.amp, views=cfg.data.views[:1],
                                     cta_mip=cfg.data.cta_mip)
        pred = postprocess(prob, case.spacing, threshold=cfg.train.threshold,
                           min_component_mm3=cfg.train.min_component_mm3).astype(bool)
        total += overlap_dice(pred, np.asarray(case.mask))  # both empty: 1 (a correct "no clot")
        count += 1
    total, count = D.all_sum([total, count], info)
    return float(total / max(count, 1.0))


def _splits(run: Run, cfg: Config, cases: list, resume: bool, progress: bool = False) -> dict:
    """The run's own splits when resuming, else ``data.splits`` or new ones (stratified by
    clot presence when ``data.stratify``: every mask is read once for it)."""
    ids = [c.case_id for c in cases]
    existing = run.read_splits(ids) if resume else None
    if existing is not None:
        return existing
    if cfg.data.splits:
        return load_splits(cfg.data.splits, ids)
    d = cfg.data
    strata = clot_strata(cases, progress) if d.stratify else None
    return make_splits(ids, scheme=d.scheme, n_folds=d.n_folds,
                       fold=d.fold, test_fraction=d.test_fraction,
                       val_fraction=d.val_fraction, seed=d.split_seed, strata=strata)


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


def train(data: str | Path, run: str | Path, cfg: Config, *, resume: bool = False,
          npy_spacing=None, progress: bool = True) -> TrainResult:
    """Train a model on ``data`` into the RUN folder ``run`` (see the module docstring).

    Args:
        data: training dataset (any supported layout, with masks).
        run: RUN folder to create, or to continue with ``resume``.
        cfg: resolved settings (checked here again).
        resume: continue from ``checkpoints/last.pt`` of ``run``.
        npy_spacing: voxel size for ``.npy`` datasets, which carry none.
        progress: progress bars and per-epoch lines on stdout (rank 0 only).

    Examples:
        >>> res = train("data/phantom", "runs/a", preset("default"))  # doctest: +SKIP
        >>> res.best_epoch, res.stopped  # doctest: +SKIP
        (27, 'epochs')
    """
    t_start = time.perf_counter()
    check(cfg)
    device = resolve_device(cfg.train.device)
    info, device = D.init_distributed(device)
    try:
        return Trainer(data, run, cfg, device=device, info=info, resume=resume,
                       npy_spacing=npy_spacing, progress=progress, t_start=t_start).fit()
    finally:
        D.cleanup(info)


def retune(run: str | Path, *, settings: list[str] | None = None, device: str = "cpu",
           progress: bool = False):
    """Choose a trained run's post-processing, false-positive filter and review threshold
    again, on its own validation cases and best weights, with this version's code; only
    ``model.json`` (and the tuning record in ``train.json``) change.

    Why: these are fitted after training, so a run trained before a post-processing
    feature existed can gain it without training again, and a comparison of two
    post-processings on one network isolates the post-processing. ``settings`` are
    ``section.key=value`` overrides of the run's ``config.yaml`` for this tuning only
    (e.g. ``train.fp_filter=true``). Returns the tuning result.
    """
    from clotseg.config import apply_overrides

    r = Run(run)
    spec, summary, cfg = r.read_spec(), r.read_summary(), r.read_config()
    if cfg is None or summary is None or not r.checkpoint_file("best").is_file():
        raise ClotsegError(f"{r.path}: not a finished training run (config.yaml, train.json "
                           "and checkpoints/best.pt are needed to tune it again)")
    cfg = apply_overrides(cfg, list(settings or []))
    check(cfg)
    if not cfg.train.tune_postprocess:
        raise ClotsegError(f"{r.path}: train.tune_postprocess is false for this run; "
                           "nothing is tuned (pass train.tune_postprocess=true to tune it)")
    info, dev = D.init_distributed(resolve_device(device))
    try:
        t = Trainer(summary.data, r.path, cfg, device=dev, info=info, resume=True,
                    progress=progress)
        tuned = t.reopen(spec).tune()
    finally:
        D.cleanup(info)
    r.write_summary(dataclasses.replace(summary, postprocess=tuned.to_dict(),
                                        component_filter=t.spec.component_filter))
    return tuned


@dataclass
class _EpochStats:
    """What :meth:`Trainer.train_epoch` measured."""

    started: float  # perf_counter at the start of the epoch
    loss: float  # mean over steps and ranks
    slices: int  # training slices, all ranks
    timed_out: bool  # the time limit stopped the epoch early
    data_s: float  # seconds waiting for batches
    train_s: float  # seconds of the optimisation part


class Trainer:
    """One training session into a RUN folder, as named steps with state on the instance.

    Why: :meth:`fit` reads as the recipe (``setup`` → ``build_data`` → ``build_or_resume``
    → per epoch ``train_epoch``, ``validate``, ``save`` → ``finish``) and each step is a
    short method; the network is built once, right after seeding, so its initial weights
    depend on ``train.seed`` only. Use :func:`train`, which also joins and leaves the
    torchrun process group.

    Args:
        data: training dataset.
        run: the RUN folder.
        cfg: checked settings.
        device: this process's device (after :func:`~clotseg.training.distributed.init_distributed`).
        info: rank and world size.
        resume: continue from ``checkpoints/last.pt``.
        npy_spacing: voxel size for ``.npy`` datasets.
        progress: progress output (only rank 0 shows it).
        t_start: when the session started (``time.perf_counter``), for the time limit.

    Examples:
        >>> info, device = D.init_distributed(resolve_device("cpu"))  # doctest: +SKIP
        >>> Trainer("data", "runs/a", cfg, device=device, info=info).fit()  # doctest: +SKIP
    """

    def __init__(self, data: str | Path, run: str | Path, cfg: Config, *, device: torch.device,
                 info: D.DistInfo, resume: bool = False, npy_spacing=None,
                 progress: bool = True, t_start: float | None = None):
        self.data, self.run, self.cfg = data, Run(run), cfg
        self.device, self.info = device, info
        self.resume, self.npy_spacing = resume, npy_spacing
        self.progress = progress and info.main
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.state, self.rows = _State(), []
        self.stopped = "epochs"
        self.total_train_s = self.total_data_s = 0.0  # this session's training time, data wait
        self.total_slices = 0

    # ------------------------------------------------------------------------- the recipe
    def fit(self) -> TrainResult:
        """Run every step and return the result (rank 0 also writes ``train.json``)."""
        self.setup()
        self.build_data()
        self.build_or_resume()
        for epoch in range(self.state.epoch, self.cfg.train.epochs):
            stats = self.train_epoch(epoch)
            dice = self.validate()
            improved = self._record(epoch, stats, dice)
            reason = self._stop_reason(stats.timed_out)
            if reason is None and self._mining_due(epoch):
                self.mine_negatives(epoch)
            self.save(epoch, dice, improved)
            if reason:
                self.stopped = reason
                break
        return self.finish()

    # ------------------------------------------------------------------------- steps
    def setup(self) -> None:
        """Check the RUN folder against ``--resume``, build the network (bad model settings
        fail before any data is read), read the dataset index and the splits, and write
        ``config.yaml``, ``splits.json`` and ``model.json``."""
        cfg, run = self.cfg, self.run
        setup_torch(cfg, self.device)
        last = run.checkpoint_file("last")
        if self.resume and not last.is_file():
            raise ClotsegError(f"{last}: nothing to resume (no checkpoint in {run.path})")
        if not self.resume and last.is_file():
            raise ClotsegError(f"{run.path} already holds a trained run; use --resume to "
                               "continue it or choose another --out")
        self.spec = model_spec(cfg)
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(self.spec)  # initial weights depend on the seed only
        self.index = discover(self.data, spacing=self.npy_spacing)
        check_run_apart(run.path, self.data,
                        [f for c in self.index.cases for f in c.files.values()])
        self.splits = _splits(run, cfg, self.index.cases, self.resume,
                              self.progress and self.info.main)
        if not self.splits["val"]:
            raise ClotsegError("the split has no validation cases; use more cases or another "
                               "split")
        self.resample = self._preprocessing()
        self.log = RunLog(run.log_path, self.info.main, self.resume)
        if self.info.main:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(cfg)
            run.write_splits(self.splits)
            run.write_spec(self.spec)

    def _preprocessing(self) -> dict | None:
        """Set ``spec.preprocess``; return the resampling the cache applies (or None).

        Trained on ``clotseg preprocess`` output, predict repeats that preprocessing on
        raw scans and maps the mask back onto the original CTA grid; otherwise every case
        is resampled to one voxel size (``data.target_spacing``), repeated by predict
        (:func:`clotseg.data.spacing.model_preprocessing`)."""
        from clotseg.data.spacing import model_preprocessing

        self.spec.preprocess, resample = model_preprocessing(
            self.data, self.cfg.data.target_spacing,
            self.index.subset(self.splits["train"]).cases, self.cfg.data.roi,
            self.cfg.data.roi_size_mm)
        return resample

    def build_data(self) -> None:
        """Cache the training and validation cases (rank 0 builds, the others open) and
        make the batch source and factory."""
        cfg, info, splits = self.cfg, self.info, self.splits
        self.cache_dir = cache_dir = self._cache_folder()

        def cached(ids: list[str], progress: bool = False) -> list[CachedCase]:
            return build_cache(self.index.subset(ids).cases, cache_dir, cfg.data.windows,
                               progress, self.resample)

        if info.main:
            cached(splits["train"] + splits["val"], self.progress)
        D.barrier(info)
        self.train_cases, self.val_cases = cached(splits["train"]), cached(splits["val"])
        if cfg.augment.enabled and cfg.augment.thick_ncct_prob > 0:  # thick slices in HU
            refs = self.index.subset(splits["train"]).cases
            if info.main:
                with_ncct_hu(refs, self.train_cases, cache_dir, cfg.data.windows,
                             self.resample, self.progress)
            D.barrier(info)
            self.train_cases = with_ncct_hu(refs, self.train_cases, cache_dir,
                                            cfg.data.windows, self.resample)
        if cfg.data.views != ["axial"]:  # the same cases re-sliced across other axes
            if info.main:
                with_views(self.train_cases, cfg.data.views, cache_dir)
            D.barrier(info)
            self.train_cases = with_views(self.train_cases, cfg.data.views, cache_dir)
        self.source, self.batch_mode = make_source(self.train_cases, cfg, self.device)
        if self.batch_mode == "stream" and warm_page_cache(self.train_cases) is not None:
            self._say("reading the cached training cases ahead into the OS page cache")
        self.sampler = sampler = SliceSampler(
            self.train_cases, cfg.data.clot_fraction, cfg.data.patch,
            cfg.data.hard_negative_fraction, cfg.data.clot_sampling,
            cfg.data.mined_negative_fraction)
        self.factory = BatchFactory(self.source, sampler, cfg.train.batch_size, cfg.data.patch,
                                    cfg.augment, cfg.data.windows,
                                    modality_dropout=cfg.train.modality_dropout,
                                    cta_mip=cfg.data.cta_mip,
                                    modality_dropout_ncct=cfg.train.modality_dropout_ncct,
                                    mirror=cfg.model.mirror,
                                    volumetric=cfg.model.name in VOLUMETRIC_MODELS)

    def _cache_folder(self) -> Path:
        """Where the prepared cases are cached: ``data.cache_dir``, else the RUN folder's."""
        return Path(self.cfg.data.cache_dir) if self.cfg.data.cache_dir else self.run.cache_dir

    def reopen(self, spec: ModelSpec) -> Trainer:
        """For :func:`retune`: the finished run's network, splits and validation cases,
        writing nothing but log lines."""
        setup_torch(self.cfg, self.device)
        self.spec = spec
        self.model = build_model(spec).to(self.device)
        self.index = discover(self.data, spacing=self.npy_spacing)
        self.splits = self.run.read_splits([c.case_id for c in self.index.cases])
        self.resample = self._preprocessing()
        self.log = RunLog(self.run.log_path, self.info.main, True)
        self.cache_dir = self._cache_folder()
        self.val_cases = build_cache(self.index.subset(self.splits["val"]).cases,
                                     self.cache_dir, self.cfg.data.windows, self.progress,
                                     self.resample)
        self._say("tuning the post-processing again on the validation cases")
        return self

    def build_or_resume(self) -> None:
        """Move the network to the device, make optimiser, schedule, loss and clock, and on
        ``--resume`` restore all of them (and the RNG states and history) from ``last.pt``."""
        cfg, device = self.cfg, self.device
        self.model = self.model.to(device)
        if cfg.train.channels_last:  # also on CPU: oneDNN trains faster (see README)
            self.model = self.model.to(memory_format=memory_format(self.model))
        self.optim = make_optimizer(cfg, self.model.parameters(), device)
        self.ema = EmaWeights(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.sched = LRSchedule(cfg, cfg.train.epochs * cfg.train.steps_per_epoch)
        for group in self.optim.param_groups:  # the schedule's first value (warm-up starts low)
            group["lr"] = cfg.optim.lr * self.sched.factor(0.0)
        if self.resume:
            self._restore()
        net = self.model
        if self.info.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.step_net = torch.compile(net) if cfg.train.compile else net
        self._log_start()
        from clotseg.training.losses import make_loss

        self.loss_fn = make_loss(cfg.train.loss)
        # after the last validation: tuning + filter on one pass, QC on predict's path
        self.clock = Clock(cfg.train.time_limit_min, self.t_start, self.sched.progress,
                           3 if cfg.train.tune_postprocess else 1)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The network that is validated, saved and predicted with: the weights' moving
        average with ``train.ema_decay``, else the trained weights."""
        return self.ema.module if self.ema is not None else self.model

    def _restore(self) -> None:
        ck = self.run.load_checkpoint("last", self.device)
        if self.ema is not None and "train_model" in ck:  # "model" holds the average
            self.model.load_state_dict(ck["train_model"])
            self.ema.load(ck["model"], int(ck.get("ema_steps", 0)))
        else:
            self.model.load_state_dict(ck["model"])
            if self.ema is not None:  # a checkpoint without an average: start it here
                self.ema.load(ck["model"], 0)
        self.optim.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        for i, points in ck.get("mined", {}).items():  # the pool the next batches draw from
            self.sampler.set_mined(int(i), points.numpy())
        self.state = _State(ck["epoch"] + 1, ck["best_dice"], ck["best_epoch"], ck["bad_epochs"])
        self.rows = [r for r in self.run.read_metrics() if r["epoch"] <= ck["epoch"] + 1]

    def _log_start(self) -> None:
        spec, splits, r = self.spec, self.splits, self.resample
        t = self.cfg.train
        precision = resolve_precision(self.device, t.precision) if t.amp else "fp32"
        if precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("train.precision=bf16: this CPU has no bf16 matrix units, so bf16 "
                          "is emulated and slower than fp32 here", UserWarning, stacklevel=2)
        self.log.write(
            f"{'resumed' if self.resume else 'started'}: {len(self.train_cases)} training, "
            f"{len(self.val_cases)} validation, {len(splits['test'])} test cases; model "
            f"{spec.model_name} {spec.model_kwargs}; device {self.device} x {self.info.world}; "
            f"batches: {self.batch_mode}, canvas {self.source.canvas}, patch "
            f"{self.cfg.data.patch or 'full'}; spacing {r['spacing'] if r else 'as stored'}; "
            f"steps in {precision}")

    def train_epoch(self, epoch: int) -> _EpochStats:
        """One epoch of optimisation (0-based ``epoch``).

        ``data_s`` is the data path's share of the epoch as far as the host sees it: on a
        GPU steps run asynchronously, so a slow data path shows there while a fast one hides
        behind queued steps."""
        t, info, device = self.cfg.train, self.info, self.device
        seeds = [batch_seed(t.seed, epoch, info.rank, s) for s in range(t.steps_per_epoch)]
        torch.manual_seed(batch_seed(t.seed, epoch, info.rank, t.steps_per_epoch))  # dropout
        self.model.train()
        batches = batch_iterator(self.factory, seeds, self.cfg.data.workers,
                                 pin_memory=device.type == "cuda")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = batches = tqdm(batches, total=len(seeds), desc=f"epoch {epoch + 1}/{t.epochs}",
                                 leave=False, unit="batch")
        t0 = time.perf_counter()
        # Losses are summed on the device and read back only for the progress bar, so that
        # a GPU is not synchronised after every step.
        loss_sum, n_steps, n_slices, timed_out = torch.zeros((), device=device), 0, 0, False
        data_s, t_ready = 0.0, time.perf_counter()
        for x, y in batches:
            t_step = time.perf_counter()
            data_s += t_step - t_ready
            loss_sum += train_step(self.step_net, self.model, x, y, self.optim, self.loss_fn,
                                   self.cfg, device)
            if self.ema is not None:
                self.ema.update(self.model)
            n_steps += 1
            n_slices += x.shape[0] * info.world
            self.clock.step_s = time.perf_counter() - t_step
            stop = self._advance_schedule(n_steps)
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
        return _EpochStats(t0, loss_sum / max(loss_n, 1.0), n_slices, timed_out, data_s,
                           time.perf_counter() - t0)

    def _advance_schedule(self, n_steps: int) -> bool:
        """Set the learning rate for the next step; True when the time limit is reached.
        Rank 0's clock decides for everyone (same stop step, same learning rate)."""
        clock, time_p, stop = self.clock, None, False
        if clock.limit is not None and (not self.info.enabled or n_steps % 10 == 1):
            flag, p = D.broadcast([float(clock.should_stop()), clock.progress()], self.info)
            stop, time_p = flag > 0, (p if self.cfg.train.schedule_by_time else None)
        p_step = self.sched.advance(time_p)
        for group in self.optim.param_groups:
            group["lr"] = self.cfg.optim.lr * self.sched.factor(p_step)
        return stop

    def validate(self) -> float:
        """Mean 3D validation Dice per patient (the module-level :func:`validate`); its
        duration tells the clock how long the last validation will take."""
        t_val = time.perf_counter()
        dice = validate(self.eval_model, self.val_cases, self.cfg, self.device, self.info)
        self.clock.val_s = time.perf_counter() - t_val
        return dice

    def _record(self, epoch: int, stats: _EpochStats, dice: float) -> bool:
        """Update the best-so-far state and append the epoch's metrics row."""
        st = self.state
        self.total_train_s += stats.train_s
        self.total_data_s += stats.data_s
        self.total_slices += stats.slices
        improved = dice > st.best
        if improved:
            st.bad = 0
        elif self.sched.progress >= self.cfg.train.patience_from:
            st.bad += 1  # early stopping waits for the schedule (train.patience_from)
        if improved:
            st.best, st.best_epoch = dice, epoch
        self.rows.append({"epoch": epoch + 1, "train_loss": stats.loss, "val_dice": dice,
                          "lr": self.optim.param_groups[0]["lr"],
                          "seconds": time.perf_counter() - stats.started,
                          "slices_per_s": stats.slices / max(stats.train_s, 1e-9),
                          "data_share": stats.data_s / max(stats.train_s, 1e-9),
                          "best": improved})
        return improved

    def save(self, epoch: int, dice: float, improved: bool) -> None:
        """Rank 0: checkpoints (``last``, and ``best`` when improved), ``metrics.csv``,
        ``curves.png`` and the epoch's log line."""
        if not self.info.main:
            return
        payload = self._payload(epoch, dice)
        self.run.write_checkpoint("last", payload)
        if improved:
            self.run.write_checkpoint("best", payload)
        self.run.write_metrics(self.rows)
        plot_curves(self.run.curves_path, self.rows)
        r = self.rows[-1]
        self._say(f"epoch {epoch + 1}/{self.cfg.train.epochs}: loss {r['train_loss']:.4f}  val "
                  f"Dice {dice:.3f}{'  (best)' if improved else ''}  lr {r['lr']:.2e}  "
                  f"{r['slices_per_s']:.0f} slices/s ({100 * r['data_share']:.0f} % waiting "
                  f"for data)  {r['seconds']:.0f} s")

    def _payload(self, epoch: int, dice: float) -> dict:
        st, spec = self.state, self.spec
        payload = {"model": self.eval_model.state_dict(), "model_name": spec.model_name,
                   "model_kwargs": spec.model_kwargs, "epoch": epoch, "val_dice": dice,
                   "best_dice": st.best, "best_epoch": st.best_epoch, "bad_epochs": st.bad,
                   "optimizer": self.optim.state_dict(), "scheduler": self.sched.state_dict(),
                   "rng": rng_state(), "config": self.cfg.to_dict()}
        if self.ema is not None:  # "model" is what predict loads; resuming needs both
            payload["train_model"] = self.model.state_dict()
            payload["ema_steps"] = self.ema.steps
        if self.sampler.mined_points:  # tensors, so weights_only loading reads them
            payload["mined"] = {str(i): torch.from_numpy(p.astype(np.int32))
                                for i, p in self.sampler.mined_points.items()}
        return payload

    def _mining_due(self, epoch: int) -> bool:
        """Whether the epoch just ended is followed by a mining pass (``data.mine_every``),
        unless it was the last one or the time budget has no room for it."""
        d = self.cfg.data
        if not (d.mined_negative_fraction > 0 and (epoch + 1) % d.mine_every == 0
                and epoch + 1 < self.cfg.train.epochs):
            return False
        # rank 0's clock decides for everyone, so that every rank keeps the same pool
        return D.broadcast([float(self.clock.should_stop())], self.info)[0] == 0

    def mine_negatives(self, epoch: int) -> None:
        """Predict ``data.mine_cases`` training cases (in turn) with the network as it is
        now and make their false positives the mined crop centres
        (:mod:`clotseg.training.mining`). Every rank mines the same cases with the same
        weights, so every rank's pool is the one the checkpoint keeps for ``--resume``."""
        import copy

        from clotseg.training.mining import mine, mining_cases

        cfg, t0 = self.cfg, time.perf_counter()
        indices = mining_cases(len(self.train_cases), cfg.data.mine_cases,
                               (epoch + 1) // cfg.data.mine_every - 1)
        model = prepare_model(copy.deepcopy(self.eval_model), self.device,
                              in_channels=2 * cfg.data.slab)
        found = mine(model, self.train_cases, indices, slab=cfg.data.slab,
                     pad_multiple=cfg.data.pad_multiple, threshold=cfg.train.threshold,
                     batch_size=cfg.train.val_batch_size, device=self.device,
                     amp=cfg.train.amp, cta_mip=cfg.data.cta_mip, seed=str(epoch))
        for i, points in found.items():
            self.sampler.set_mined(i, points)
        if self.info.main:
            self._say(f"mined negatives after epoch {epoch + 1}: "
                      f"{sum(len(p) for p in found.values())} points in "
                      f"{sum(len(p) > 0 for p in found.values())} of {len(found)} cases "
                      f"({len(self.sampler.mined)} in the pool, "
                      f"{time.perf_counter() - t0:.0f} s)")

    def _stop_reason(self, timed_out: bool) -> str | None:
        if timed_out:
            return "time-limit"
        if self.state.bad >= self.cfg.train.patience:
            return "early-stopping"
        return None

    def finish(self) -> TrainResult:
        """Tune post-processing (and fit the component filter) on validation, then write
        ``train.json`` and the closing log line (rank 0); every rank returns the result."""
        st, info = self.state, self.info
        tuned = None
        if info.main and self.cfg.train.average_last and st.best_epoch >= 0:
            self.average_best_and_last()
        if info.main and self.cfg.train.tune_postprocess and st.best_epoch >= 0:
            tuned = self.tune()
        elapsed = time.perf_counter() - self.t_start
        result = TrainResult(self.run.path, st.best, st.best_epoch + 1, len(self.rows), elapsed,
                             self.stopped)
        if info.main:
            self.log.write(f"stopped ({self.stopped}) after {len(self.rows)} epoch(s), "
                           f"{elapsed / 60:.1f} min; best validation Dice {st.best:.3f} at "
                           f"epoch {st.best_epoch + 1}")
            self.run.write_summary(self._summary(elapsed, tuned))
        D.barrier(info)
        return result

    def average_best_and_last(self) -> None:
        """Make ``best.pt``'s ``model`` the mean of the best-validated and the last
        weights (``train.average_last``), keeping the best ones as ``best_model``.

        Why: the best epoch is picked on a dozen validation patients whose Dice wanders by
        0.1 over the last epochs, so "best" is partly chance, and the last weights alone
        trade specificity for sensitivity on unseen patients; their mean is one network at
        no extra predict cost. Applied to four finished runs it found more unseen-site
        clots than either; one run trained with it did not (README). Every floating-point
        tensor is averaged, batch-norm statistics included. Run again after a resume, it
        averages the kept best weights with the new last ones, never an average again.
        """
        best = self.run.load_checkpoint("best", self.device)
        last = self.run.load_checkpoint("last", self.device)
        if last["epoch"] == best["epoch"]:
            return  # the last epoch was the best one: nothing to average
        kept = best.get("best_model", best["model"])
        best["model"] = {k: (v + last["model"][k]) / 2 if v.is_floating_point() else v
                         for k, v in kept.items()}
        best["best_model"], best["averaged_with_epoch"] = kept, last["epoch"]
        self.run.write_checkpoint("best", best)
        self._say(f"best weights (epoch {best['epoch'] + 1}) averaged with the last ones "
                  f"(epoch {last['epoch'] + 1}) for prediction")

    def _summary(self, elapsed: float, tuned) -> TrainSummary:
        st, train_s = self.state, max(self.total_train_s, 1e-9)
        return TrainSummary(
            best_val_dice=st.best, best_epoch=st.best_epoch + 1, epochs_done=len(self.rows),
            seconds=elapsed, stopped=self.stopped, device=str(self.device),
            world_size=self.info.world, batches=self.batch_mode,
            slices_per_s=round(self.total_slices / train_s, 2),
            data_share=round(self.total_data_s / train_s, 4),
            n_train=len(self.train_cases), n_val=len(self.val_cases),
            n_test=len(self.splits["test"]), data=str(Path(self.data).resolve()),
            postprocess=tuned.to_dict() if tuned else None,
            component_filter=self.spec.component_filter)

    def tune(self):
        """Pick threshold and smallest component on validation with the best weights,
        learn the false-positive filter, and write them into ``model.json`` (see
        :mod:`clotseg.training.tuning`)."""
        import copy

        from clotseg.training.tuning import tune_postprocess, validation_probabilities

        cfg, spec = self.cfg, self.spec
        best = copy.deepcopy(self.model)
        best.load_state_dict(self.run.load_checkpoint("best", self.device)["model"])
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="val_prob_", dir=self.cache_dir) as spill:
            probs = validation_probabilities(best, self.val_cases, cfg, self.device,
                                             spill=Path(spill))
            tuned = tune_postprocess(best, self.val_cases, cfg, self.device, probs=probs)
            spec.threshold, spec.min_component_mm3 = tuned.threshold, tuned.min_component_mm3
            spec.component_filter = self._fit_filter(probs) if cfg.train.fp_filter else None
            spec.qc = self._fit_qc(probs)
            del probs  # the maps close before their folder goes
        self.run.write_spec(spec)
        self._say(f"post-processing chosen on validation: threshold {tuned.threshold:g}, "
                  f"components < {tuned.min_component_mm3:g} mm³ dropped (val Dice "
                  f"{tuned.val_dice:.3f}; configured {cfg.train.threshold:g} / "
                  f"{cfg.train.min_component_mm3:g} mm³: {tuned.configured_val_dice:.3f})")
        if tuned.n_patients:
            self._say(f"{tuned.patients_with_speck} of {tuned.n_patients} validation patients "
                      "kept a component away from their clot: expect about "
                      f"{100 * tuned.patients_with_speck / tuned.n_patients:.0f} % of "
                      "clot-free patients to get a false positive")
        return tuned

    def _fit_filter(self, probs: list[np.ndarray]) -> dict | None:
        """Learn the false-positive component filter on the validation predictions
        post-processed with the tuned settings (:mod:`clotseg.inference.fp_filter`)."""
        from clotseg.inference.fp_filter import fit_component_filter

        spec = self.spec
        data = [(postprocess(p, c.spacing, threshold=spec.threshold,
                             min_component_mm3=spec.min_component_mm3), p, np.asarray(c.mask),
                 c.spacing, *self._scans(c)) for c, p in zip(self.val_cases, probs)]
        filt, why = fit_component_filter(data)
        self._say(f"false-positive filter: {why}" if filt is None else
                  f"false-positive filter learned on {filt.fitted_on['components']} validation "
                  f"components ({filt.fitted_on['not_clot']} not clot): score threshold "
                  f"{filt.threshold:g}, val Dice {filt.fitted_on['val_dice']:.3f}")
        return filt.to_dict() if filt else None

    def _scans(self, case: CachedCase) -> tuple:
        """``case``'s CTA and NCCT as the false-positive filter reads them (HU in the
        network's windows, mapped back from the cache box by box)."""
        from clotseg.inference.fp_filter import WindowedScan

        w = self.cfg.data.windows
        return (WindowedScan(case.image[0], w["cta"], normalised=True),
                WindowedScan(case.image[1], w["ncct"], normalised=True))

    def _fit_qc(self, probs: list[np.ndarray]) -> dict:
        """Choose the review flag's QC threshold on the validation cases, masks made as
        ``predict`` makes them.

        The score reads how sharp the probability map is around the clot, and
        ``predict``'s map is interpolated back onto each scan's own grid, which softens
        it: on the training grid a validation case scored 0.25 where ``predict`` gave the
        same case 0.46, and a threshold chosen on such scores flagged nine in ten good
        test masks. So validation cases that are raw scans are predicted exactly as
        ``predict`` does them (:meth:`_predicted_validation`) and scored there. A dataset
        written by ``clotseg preprocess`` holds scans that ``predict`` would preprocess
        again; it is scored on the training grid
        (:func:`clotseg.inference.qc.validation_qc`), as are cases whose mask is not on
        their CTA's grid, and all of them, with a log line, if predicting one fails."""
        from clotseg.inference.qc import choose_threshold, validation_qc
        from clotseg.preprocess.pipeline import inference_settings_of

        spec = self.spec
        scored = None
        if inference_settings_of(self.data) is None:
            try:
                scored = self._predicted_validation()
            except ClotsegError as exc:  # the run is kept: fall back and say why
                self._say(f"QC: predicting the validation cases as predict does failed "
                          f"({exc}); scoring them on the training grid instead")
        if scored is not None:
            q = choose_threshold(scored.scores, scored.dice)
            q.fitted_on["maps"] = "predict"
            q.fitted_on["scores"] = scored.score_table(scored.scores)
            if scored.support_scores is not None:  # predict --scan-support's scores run higher
                s = choose_threshold(scored.support_scores, scored.dice)
                s.fitted_on["maps"] = "predict, with scan support"
                s.fitted_on["scores"] = scored.score_table(scored.support_scores)
                q.scan_support = {"threshold": s.threshold, "fitted_on": s.fitted_on}
        else:
            q = validation_qc([(p, np.asarray(c.mask), c.spacing, *self._scans(c)) for c, p in
                               zip(self.val_cases, probs)], spec.threshold,
                              spec.min_component_mm3, spec.component_filter,
                              spec.grow_threshold)
            q.fitted_on["maps"] = "training grid"
        f = q.fitted_on
        self._say(f"QC review threshold {q.threshold:g} chosen on {f.get('cases', 0)} validation "
                  f"cases ({f['maps']} maps): flags {f.get('bad_flagged', 0)} of "
                  f"{f.get('bad', 0)} with Dice < 0.5, {f.get('good_flagged', 0)} of "
                  f"{f.get('good', 0)} with Dice >= 0.8"
                  + (f"; {q.scan_support['threshold']:g} for scores with scan support"
                     if q.scan_support else ""))
        return q.to_dict()

    def _predicted_validation(self) -> ScoredCases | None:
        """The validation cases predicted by ``predict``'s own path (:func:`predicted_qc`)
        with the settings just chosen; with the scan-support scores too for a model
        trained for missing scans (one pass gives both)."""
        self.run.write_spec(self.spec)  # the predictor reads the tuned post-processing
        return predicted_qc(self.run.path, self.index.subset(self.splits["val"]).cases,
                            device=str(self.device),
                            batch_size=self.cfg.train.val_batch_size,
                            scan_support=self.spec.trained_for_missing)

    def _say(self, line: str) -> None:
        """Write ``line`` to ``train.log`` and, with progress on, to stdout."""
        self.log.write(line)
        if self.progress:
            print(line, flush=True)


@dataclass
class ScoredCases:
    """Cases predicted as ``predict`` does them: ids, review scores and Dice against their
    reference masks; ``support_scores`` are the scores with the scan-support signal, when
    asked for and the run can give them (its masks are the same either way)."""

    ids: list[str]
    scores: list[float]
    dice: list[float]
    support_scores: list[float] | None = None

    def score_table(self, scores: list[float]) -> dict[str, float]:
        """``case id -> score`` as stored in ``model.json`` (4 decimals)."""
        return {c: round(float(v), 4) for c, v in zip(self.ids, scores, strict=True)}


def predicted_qc(run: str | Path, cases, *, device: str = "cpu", batch_size: int = 16,
                 scan_support: bool = False) -> ScoredCases | None:
    """``cases`` (indexed cases with a reference mask) predicted by ``predict``'s own path:
    read, resample, infer, map back onto the scan's grid, post-process with the run's
    settings. None when a case's mask is not on its CTA's grid. What the review threshold
    is chosen on, at the end of training and when a benchmark chooses it again for an
    existing run. With ``scan_support`` (for a run trained for missing scans) one pass
    gives the scores without and with the scan-support signal."""
    from clotseg.inference.predictor import Predictor
    from clotseg.inference.qc import case_qc

    predictor = Predictor.from_runs([Path(run)], device=device, batch_size=batch_size,
                                    scan_support=scan_support)
    out, supported = ScoredCases([], [], []), []
    with warnings.catch_warnings():  # the cases' warnings were given when cached
        warnings.simplefilter("ignore")
        for case in cases:
            vols = case.load()
            if vols.mask is None or not vols.mask.grid.same_as(vols.cta.grid):
                return None
            seg = predictor.segment(vols.cta, vols.ncct, case.case_id)
            mask = np.asarray(seg.mask.array)
            out.ids.append(case.case_id)
            out.dice.append(overlap_dice(mask > 0, np.asarray(vols.mask.array) > 0))
            if seg.support is None:  # scan support not asked for, or not possible here
                out.scores.append(seg.qc_score)
                supported.append(None)
                continue
            supported.append(seg.qc_score)
            plain, _ = case_qc(seg.prob, mask, vols.cta.spacing, predictor.post["threshold"])
            out.scores.append(plain)
    if scan_support and supported and None not in supported:
        out.support_scores = supported
    return out


def train_step(step_net, model, x: torch.Tensor, y: torch.Tensor, optim, loss_fn, cfg: Config,
               device: torch.device) -> torch.Tensor:
    """One optimisation step (bf16 autocast per ``train.precision``, channels-last,
    gradient clipping); returns the detached loss (not synchronised)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, cfg.train.amp, cfg.train.precision):
        logits = step_net(x)
    if logits.ndim == 5:  # a volumetric network's deep-supervision heads (B, K, S, H, W)
        loss = deep_supervision_loss(loss_fn, logits.float(), y)
    else:
        if logits.shape[1] > 1:  # a volumetric network: one 3D volume of slices per sample
            logits, y = logits.unsqueeze(1), y.unsqueeze(1)
        loss = loss_fn(logits.float(), y)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optim.step()
    return loss.detach()

