"""Shared fixtures. Tests run in parallel (pytest-xdist, 2 workers), so each worker uses
one torch thread to avoid oversubscribing the cores."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
