"""Seconds per named stage of one piece of work (e.g. predicting one case), collected
across modules without passing a timer around.

:func:`collect` opens a record for the current context; :func:`stage` adds the wall-clock
seconds of a block to it under a name (nothing is recorded, at no cost, outside a
:func:`collect`). ``clotseg predict`` reports these per case in ``predict.json``, and the
latency benchmark prints them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_RECORD: ContextVar[tuple[dict[str, float], dict[str, float] | None] | None] = ContextVar(
    "clotseg_stage_seconds", default=None)


@contextlib.contextmanager
def collect(into: dict[str, float], cpu: dict[str, float] | None = None
            ) -> Iterator[dict[str, float]]:
    """Record the stages run inside the block into ``into`` (wall-clock seconds added per
    name) and, when given, the process's CPU seconds (all threads) into ``cpu``: on a
    shared machine CPU time says more about the work than wall time does."""
    token = _RECORD.set((into, cpu))
    try:
        yield into
    finally:
        _RECORD.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the block's seconds to ``name`` in the active record, if any."""
    active = _RECORD.get()
    if active is None:
        yield
        return
    record, cpu = active
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record[name] = record.get(name, 0.0) + time.perf_counter() - t0
        if cpu is not None:
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0
