"""Faults that need a child process: kill -9 in the middle of predict and of train, and a
named pipe in a folder scanned for DICOM (which must not block the scan)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from clotseg.io import read_volume
from tests.faults.conftest import Ctx, cli
from tests.faults.test_faults import intact


def _start(*argv: object) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "clotseg.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _kill_when(proc: subprocess.Popen, ready) -> None:
    """kill -9 ``proc`` as soon as ``ready()`` is true; a child that ends first (it always
    ends: its work is finite) never reached the point to kill it at, and fails the test."""
    while not ready():
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_kill_9_during_predict(ctx: Ctx):
    data, pred = ctx.data(3), ctx.tmp / "pred"
    proc = _start("predict", ctx.run(), data, pred, "--quiet", "--save-prob", "--threads", "1")
    _kill_when(proc, lambda: len(list(pred.glob("*_prob.nii.gz"))) >= 1)
    # every file under its final name is complete; only hidden temporary files may remain
    leftovers = [p for p in pred.iterdir() if ".tmp" in p.name]
    assert all(p.name.startswith(".") for p in leftovers)
    for p in pred.glob("*.nii.gz"):
        read_volume(p)
    # a rerun takes over the dead run's lock, clears its temporary files and completes
    res = cli("predict", ctx.run(), data, pred, "--quiet")
    assert res.code == 0 and "Traceback" not in res.text, res.text
    assert "pid" in res.err  # the stale lock was reported
    intact(pred)
    assert len([p for p in pred.glob("*.nii.gz") if "_prob" not in p.name]) == 3


def test_kill_9_during_train_and_resume_with_unreadable_history(ctx: Ctx):
    data, run = ctx.data(4), ctx.tmp / "run_new"
    proc = _start("train", data, "--out", run, "--epochs", "50", "--set", "model.base=4",
                  "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=2",
                  "--set", "data.patch=32", "--set", "data.n_folds=3",
                  "--set", "train.threads=1", "--set", "train.tune_postprocess=false")
    _kill_when(proc, lambda: (run / "metrics.csv").is_file()
               and (run / "checkpoints" / "last.pt").is_file())
    from clotseg.training.checkpoint import load_checkpoint
    from clotseg.training.logging import read_metrics

    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] >= 0
    assert read_metrics(run / "metrics.csv")
    assert not [p for p in run.rglob("*") if ".tmp" in p.name and not p.name.startswith(".")]
    # a fresh train into it is refused (it holds a run), the stale lock does not block
    res = cli("train", data, "--out", run, "--epochs", "1")
    assert res.code == 1 and "--resume" in res.err and "in use" not in res.err, res.text
    # resuming with a damaged history stops with the file named; the history is kept
    history = run / "metrics.csv"
    damaged = history.read_bytes() + b"7,\xff\xfe,broken\n"
    history.write_bytes(damaged)
    res = cli("train", data, "--out", run, "--resume", "--epochs", "51")
    assert res.code == 1 and "Traceback" not in res.text, res.text
    assert str(history) in res.err and "history" in res.err, res.err
    assert history.read_bytes() == damaged


def test_fifo_in_a_dicom_folder_is_skipped_not_waited_on(ctx: Ctx):
    from tests.faults.test_faults import _dicom_case

    case = _dicom_case(ctx)
    os.mkfifo(case / "cta" / "pipe")
    proc = subprocess.run([sys.executable, "-m", "clotseg.cli", "check", str(case)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and f"{case / 'cta' / 'pipe'}" in text, text
    assert "not a regular file" in text
