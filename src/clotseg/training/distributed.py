"""torchrun / DistributedDataParallel helpers (NCCL on GPUs, gloo on CPU).

A process started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its
environment; without them everything here is a no-op, so single-process training needs no
special case. Only rank 0 writes files; metrics are summed over ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun; returns the info and this rank's
    device (``cuda:LOCAL_RANK`` on GPUs, selected before the NCCL group is created)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo(device=device), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, device), device


def _tensor(values, info: DistInfo) -> torch.Tensor:
    dev = info.device if info.device is not None and info.device.type == "cuda" else "cpu"
    return torch.tensor(values, dtype=torch.float64, device=dev)


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum floats over ranks (identity when not distributed)."""
    if not info.enabled:
        return list(values)
    t = _tensor(values, info)
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast(values: list[float], info: DistInfo) -> list[float]:
    """Rank 0's values (e.g. stop now, schedule progress) for everyone."""
    if not info.enabled:
        return list(values)
    t = _tensor(values, info)
    dist.broadcast(t, 0)
    return t.cpu().tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        if info.device is not None and info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
