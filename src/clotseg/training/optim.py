"""How the weights move: the optimiser, the learning-rate schedule, and the clock of a
``--time-limit`` run that both stops training and, with ``train.schedule_by_time``, drives
the schedule so that a time-limited run still ends with a small learning rate.

Kept apart from the loop in :mod:`clotseg.training.trainer` so that the benchmarks build
exactly the optimiser ``clotseg train`` uses.
"""

from __future__ import annotations

import math
import os
import time

import torch

from clotseg.config import Config


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


def setup_torch(cfg: Config, device: torch.device) -> None:
    """Threads, determinism and the CUDA math modes ``cfg.train`` asks for."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


class Clock:
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
