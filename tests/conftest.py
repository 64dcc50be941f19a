"""Shared fixtures. Tests run in parallel (pytest-xdist, 2 workers), so each worker uses
one torch thread to avoid oversubscribing the cores."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A small phantom cohort on disk (case folders), shared by the tests of a worker."""
    from clotseg.synth import write_cohort

    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root, 8, seed=3, size="small", progress=False)
    return root
